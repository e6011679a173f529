"""Zero-cost proxies against independent computations, and batched candidate scoring
against the discrete networks scored one by one."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from jax import lax

from jaxdarts import genotype as G
from jaxdarts import networks, proxies, spaces, supernet


class Small(nn.Module):
    """conv 3x3 -> BN -> ReLU -> conv 1x1 (bias) -> ReLU -> avg pool -> dense."""

    bias: bool = False
    bn: bool = True

    @nn.compact
    def __call__(self, x, *, train):
        x = nn.Conv(4, (3, 3), padding=1, use_bias=False)(x)
        if self.bn:
            x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x)
        x = nn.relu(nn.Conv(3, (1, 1), use_bias=self.bias)(x))
        return nn.Dense(5, use_bias=self.bias)(jnp.mean(x, (1, 2)))


def _independent_forward(k1, k2, b2, k3, b3, x, scale=None, shift=None):
    """The same network written with lax/jnp; BatchNorm in training mode by hand."""
    h = lax.conv_general_dilated(x, k1, (1, 1), [(1, 1), (1, 1)], dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if scale is not None:
        m = h.mean((0, 1, 2))
        v = ((h - m) ** 2).mean((0, 1, 2))
        h = (h - m) / jnp.sqrt(v + 1e-5) * scale + shift
    h = jax.nn.relu(h)
    h = jax.nn.relu(jnp.einsum("nhwc,co->nhwo", h, k2[0, 0]) + b2)
    return jnp.mean(h, (1, 2)) @ k3 + b3


def _batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": jnp.asarray(rng.normal(size=(n, 5, 5, 2))), "label": jnp.asarray(rng.integers(0, 5, n))}


def test_synflow_closed_form_and_bn_removal(x64):
    """Bias-free, BatchNorm-free ReLU network: every layer's score sum equals R (Euler's
    theorem for the positively homogeneous R), so the total is 3 R; the BatchNorm of the
    Flax network is removed (bn='none'), R is computed without it."""
    model = Small(bias=False, bn=True)
    v = model.init(jax.random.key(0), jnp.zeros((1, 5, 5, 2)), train=False)
    p = jax.tree.map(lambda a: jnp.abs(jnp.asarray(a, jnp.float64)), v["params"])
    x = jnp.ones((1, 5, 5, 2), jnp.float64)
    r = float(jnp.sum(_independent_forward(p["Conv_0"]["kernel"], p["Conv_1"]["kernel"], 0.0, p["Dense_0"]["kernel"],
                                           0.0, x)))
    with jax.enable_x64(True):
        score = proxies.synflow(model, v, (1, 5, 5, 2))
        assert score.dtype == jnp.float64
        kept = proxies.synflow(model, v, (1, 5, 5, 2), bn="keep")
    np.testing.assert_allclose(score, 3 * r, rtol=1e-12)
    # bn='keep': the BatchNorm stays, in training mode on the statistics of the one all-ones
    # image, its |scale| and |bias| included; score = sum |W dR/dW| over the three kernels
    ks = (p["Conv_0"]["kernel"], p["Conv_1"]["kernel"], p["Dense_0"]["kernel"])
    bn = p["BatchNorm_0"]
    r_kept = lambda k1, k2, k3: jnp.sum(_independent_forward(k1, k2, 0.0, k3, 0.0, x, bn["scale"], bn["bias"]))
    with jax.enable_x64(True):
        gs = jax.grad(r_kept, (0, 1, 2))(*ks)
        expect = float(sum(jnp.sum(jnp.abs(k * g)) for k, g in zip(ks, gs)))
    np.testing.assert_allclose(kept, expect, rtol=1e-10)
    assert abs(expect - 3 * r) > 1e-3 * r  # and it is not the BatchNorm-free score


def test_snip_and_grasp_against_independent_computations(x64):
    """SNIP = sum |W dL/dW| and GraSP = -W . (H g) over the conv/dense kernels only (not
    biases, not BatchNorm), BatchNorm on batch statistics; H is the full Hessian of the
    independent forward with respect to the three kernels (jax.hessian, no HVP)."""
    model = Small(bias=True, bn=True)
    batch = _batch()
    v = model.init(jax.random.key(1), jnp.zeros((1, 5, 5, 2)), train=False)
    v = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), v)
    p = v["params"]
    ks = [p["Conv_0"]["kernel"], p["Conv_1"]["kernel"], p["Dense_0"]["kernel"]]
    sizes = [k.size for k in ks]
    flat = jnp.concatenate([k.ravel() for k in ks])

    def loss(flat):
        parts = jnp.split(flat, np.cumsum(sizes)[:-1])
        k1, k2, k3 = (q.reshape(k.shape) for q, k in zip(parts, ks))
        logits = _independent_forward(k1, k2, p["Conv_1"]["bias"], k3, p["Dense_0"]["bias"], batch["image"],
                                      p["BatchNorm_0"]["scale"], p["BatchNorm_0"]["bias"])
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]))

    g = jax.grad(loss)(flat)
    h = jax.hessian(loss)(flat)
    np.testing.assert_allclose(proxies.snip(model, v, batch), np.sum(np.abs(flat * g)), rtol=1e-10)
    np.testing.assert_allclose(proxies.grasp(model, v, batch), -np.sum(flat * (h @ g)), rtol=1e-8)


def test_nb201_proxy_network_and_its_synflow_against_a_transcription(x64):
    """The discrete zero-cost-proxy NB201 network (C=2, N=1; a cell with all five ops)
    against a lax transcription written from the reference's layer list (tests/reference.py,
    no code of the package): training-mode logits, and Synflow with bn='nb201_reference'
    (only the ResNet blocks' BatchNorms kept) and bn='none', each as sum |W dR/dW| over the
    kernels of the transcription's R = sum(logits) at |theta| on an all-ones image."""
    from reference import nb201_proxy_transcription

    g = G.Genotype.from_nb201_str("|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
                                  "none~2|")
    net = networks.NetworkNB201(g, C=2, N=1, cell_affine=False, track_running_stats=False)
    v = net.init({"params": jax.random.key(4)}, jnp.zeros((1, 8, 8, 3)), train=True)
    v = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), v)
    x = jax.random.normal(jax.random.key(5), (4, 8, 8, 3), jnp.float64)
    ones = jnp.ones((1, 8, 8, 3), jnp.float64)

    def expected_synflow(params, mode):
        absp = jax.tree.map(jnp.abs, params)
        grads = jax.grad(lambda p: jnp.sum(nb201_proxy_transcription(p, g, ones, bn=mode)))(absp)
        flat_p, flat_g = (dict(jax.tree_util.tree_flatten_with_path(t)[0]) for t in (absp, grads))
        return sum(jnp.sum(jnp.abs(w * flat_g[k])) for k, w in flat_p.items() if k[-1].key == "kernel")

    @jax.jit  # one program: the package's values and the transcription's
    def both(v, x):
        got = net.apply(v, x, train=True, mutable=["batch_stats"])[0]
        return (got, nb201_proxy_transcription(v["params"], g, x),
                [proxies.synflow(net, v, (1, 8, 8, 3), bn=bn) for bn in ("nb201_reference", "none")],
                [expected_synflow(v["params"], mode) for mode in ("resblocks", "none")])

    got, ref, syn, expect = jax.device_get(both(v, x))
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(syn, expect, rtol=1e-10)
    assert abs(expect[0] - expect[1]) > 1e-3 * abs(expect[1])  # keeping the blocks' BatchNorms matters


def _discrete_variables(sp, variables, genotype):
    """The one-hot NB201 supernet's variables for the selected ops, renamed as
    :class:`NetworkNB201`'s (each edge group's stacked op parameters, sliced)."""
    out = {}
    for col, tree in variables.items():
        d = {}
        for name, sub in tree.items():
            if not name.startswith("cell_"):
                d[name] = sub
                continue
            cell = {}
            for grp in supernet.edge_groups(sp, "normal", False):
                for i, e in enumerate(grp.edges):
                    op = genotype.normal[e][0]
                    if op in sub.get(grp.name, {}):
                        cell[f"edge{e}"] = jax.tree.map(lambda x, i=i: x[i], sub[grp.name][op])
            if cell:
                d[name] = cell
        out[col] = d
    return out


@pytest.mark.slow
def test_batched_candidate_scoring_equals_the_discrete_networks_one_by_one():
    """Two NB201 cells scored as one compiled program of the one-hot supernet (fresh
    init per candidate) equal each discrete NetworkNB201 (the zero-cost-proxy network:
    cell conv biases, batch-statistics BN) with the same weights, scored one at a time.
    Synflow and SNIP (GraSP goes through the same batched path; its value is tested
    against a dense Hessian above)."""
    sp = spaces.get("nb201")
    model = supernet.Supernet("nb201", 10, C=2, layers=1, track_running_stats=False, lowering="conv")
    gs = [G.Genotype.from_nb201_str(s) for s in (
        "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|",
        "|avg_pool_3x3~0|+|none~0|nor_conv_1x1~1|+|nor_conv_3x3~0|skip_connect~1|nor_conv_1x1~2|")]
    alphas = {"normal": jnp.stack([G.to_alpha(sp, g)["normal"] for g in gs])}
    keys = jax.random.split(jax.random.key(3), len(gs))
    batch = {k: v[:, :4, :4] if k == "image" else v for k, v in _batch(8, 1).items()}
    batch["image"] = jnp.concatenate([batch["image"], batch["image"][..., :1]], -1).astype(jnp.float32)
    for proxy, data in (("synflow", (1, 4, 4, 3)), ("snip", batch)):
        kw = {"synflow_bn": "nb201_reference"} if proxy == "synflow" else {}
        scores = proxies.score_candidates(proxy, model, alphas, keys, data, batch_size=2, **kw)
        for k, g in enumerate(gs):
            v = proxies.init_variables(model, keys[k], {"normal": alphas["normal"][k]}, (1, 4, 4, 3))
            net = networks.NetworkNB201(g, C=2, N=1, cell_affine=False, track_running_stats=False)
            vd = _discrete_variables(sp, v, g)
            if proxy == "synflow":
                with jax.enable_x64(True):
                    ref = proxies.synflow(net, vd, data, bn="nb201_reference")
            else:
                ref = proxies.get(proxy)(net, vd, data)
            np.testing.assert_allclose(scores[k], ref, rtol=1e-10 if proxy == "synflow" else 2e-4, err_msg=proxy)
    assert len(set(np.round(scores, 6))) == 2
    with pytest.raises(ValueError, match="unknown proxy 'jacov'; accepted: synflow, snip, grasp"):
        proxies.get("jacov")
    with pytest.raises(ValueError, match="synflow needs float64"):
        proxies.synflow(net, vd, (1, 4, 4, 3))


def test_chunked_scoring_with_progress_equals_one_call():
    alphas = {"normal": np.random.default_rng(0).normal(size=(7, 3, 2))}
    keys = jax.random.split(jax.random.key(0), 7)
    calls = []

    def scorer(a, k, data):  # any per-candidate function of (alpha, key)
        calls.append(len(k))
        return a["normal"].sum(axis=(1, 2)) + np.asarray(jax.vmap(jax.random.uniform)(k))

    ref = scorer(alphas, keys, None)
    calls.clear()
    logs = []
    got = proxies.score_with_progress(scorer, alphas, keys, None, chunk=3, log=logs.append)
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    assert calls == [3, 3, 3] and len(logs) == 3 and logs[-1].startswith("scored 7/7 candidates")


_SCORED_CELL = G.Genotype(normal=[("max_pool_3x3", 0), ("sep_conv_3x3", 1)],
                          reduce=[("sep_conv_3x3", 0), ("skip_connect", 1)], normal_concat=(2,), reduce_concat=(2,))
"""An S5 cell (DARTS macro, one node): a pool and a separable conv in the normal cell, a
strided separable conv and a strided skip (FactorizedReduce) in the reduction cell."""


def _supernet_variables_from_network_cifar(sp, sup_vars, eval_vars, genotype, layers):
    """The one-hot supernet's variables with :class:`NetworkCIFAR`'s parameters placed in
    it: stem, classifier and each cell's preprocessing copied, each selected op's
    ``op{j}_{name}`` written into its edge's slot of the edge group's stacked op (the
    unselected ops keep the supernet's own; their mixing weight is 0)."""
    out = {col: dict(tree) for col, tree in sup_vars.items()}
    for col, tree in out.items():
        for name in tree:
            src = eval_vars.get(col, {}).get(name)
            if not name.startswith("cell_"):
                tree[name] = src
                continue
            ctype = sp.cell_type_of(int(name.split("_")[1]), layers)
            gene = genotype.cell(ctype)
            cell = tree[name] = dict(tree[name])
            for pre in ("preprocess0", "preprocess1"):
                if pre in cell:
                    cell[pre] = src[pre]
            for grp in supernet.edge_groups(sp, ctype, ctype == "reduce"):
                if grp.name not in cell:
                    continue
                ops = cell[grp.name] = dict(cell[grp.name])
                for slot, e in enumerate(grp.edges):
                    node, inp = sp.edges[e]
                    for j in (2 * node, 2 * node + 1):
                        op, frm = gene[j]
                        if frm == inp and op in ops:
                            ops[op] = jax.tree.map(lambda d, v, slot=slot: d.at[slot].set(v), ops[op],
                                                   src[f"op{j}_{op}"])
    return out


def test_eval_style_one_hot_supernet_is_network_cifar_and_synflow_ignores_the_choice(x64):
    """BaLeNAS-TF's ``tf.network='eval'`` scores with ``Supernet(affine=True)`` and one-hot
    weights: with NetworkCIFAR's parameters mapped into it (op by op, by the genotype),
    its training-mode logits, Synflow and SNIP equal NetworkCIFAR's own (an independent
    module: EvalCell's two ops per node). The search-style supernet (``'search'``, pools
    followed by an affine-free BatchNorm) with the same kernels has another SNIP score but
    the same Synflow score (bn='none' removes every BatchNorm), and a fresh initialisation
    gives both supernets the same kernels from the same key: under Synflow the choice changes
    nothing in the DARTS macro. Synflow as one forward-mode derivative (the scorer's
    program where it is exact) equals the reverse-mode score."""
    from flax import traverse_util

    sp = spaces.get("s5")
    g = _SCORED_CELL
    C, L = 4, 3
    net = networks.NetworkCIFAR(g, C=C, layers=L, auxiliary=False, lowering="conv")
    evs = supernet.Supernet(sp, 10, C=C, layers=L, affine=True, track_running_stats=False, lowering="conv")
    srch = supernet.Supernet(sp, 10, C=C, layers=L, track_running_stats=False, lowering="conv")
    alpha = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), G.to_alpha(sp, g))
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3), jnp.float64)
    batch = {"image": x, "label": jnp.array([0, 3, 7, 3])}
    to64 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), t)
    flat = traverse_util.flatten_dict

    @jax.jit  # one program: initialisations, parameter mapping, logits and scores
    def run():
        v_net = to64(net.init({"params": jax.random.key(2)}, x[:1], train=True))
        fresh = [to64(proxies.init_variables(m, jax.random.key(3), alpha, (1, 8, 8, 3))) for m in (evs, srch)]
        v_evs = _supernet_variables_from_network_cifar(sp, fresh[0], v_net, g, L)
        mapped = flat(v_evs["params"])
        v_srch = {**fresh[1], "params": traverse_util.unflatten_dict(
            {k: mapped.get(k, v) for k, v in flat(fresh[1]["params"]).items()})}
        kw = dict(normalized=True)
        logits = [net.apply(v_net, x, train=True, mutable=["batch_stats"])[0],
                  evs.apply(v_evs, x, alpha, train=True, mutable=["batch_stats"], **kw)[0]]
        syn = [proxies.synflow(net, v_net, (1, 8, 8, 3)), proxies.synflow(evs, v_evs, (1, 8, 8, 3), alpha, **kw),
               proxies.synflow(srch, v_srch, (1, 8, 8, 3), alpha, **kw),
               proxies.synflow(evs, v_evs, (1, 8, 8, 3), alpha, forward=True, **kw),
               proxies.synflow(srch, v_srch, (1, 8, 8, 3), alpha, forward=True, **kw)]
        snip = [proxies.snip(net, v_net, batch), proxies.snip(evs, v_evs, batch, alpha, **kw),
                proxies.snip(srch, v_srch, batch, alpha, **kw)]
        return logits, syn, snip, [flat(f["params"]) for f in fresh]

    logits, syn, snip, fresh = jax.device_get(run())
    # float32 tolerances where BatchNorm statistics enter: Flax's BatchNorm (NetworkCIFAR)
    # reduces in float32, the supernet's batch-statistics BatchNorm in the input's float64
    np.testing.assert_allclose(logits[1], logits[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(syn[1:3], [syn[0]] * 2, rtol=1e-7)
    np.testing.assert_allclose(syn[3:], syn[1:3], rtol=1e-12)  # one jvp = the gradient's sum |W dR/dW|
    np.testing.assert_allclose(snip[1], snip[0], rtol=1e-5)
    assert abs(snip[2] - snip[0]) > 1e-2 * abs(snip[0])  # the search style normalises the pool's output
    kernels = [k for k in fresh[1] if k[-1] == "kernel"]
    assert kernels and all(np.array_equal(fresh[0][k], fresh[1][k]) for k in kernels)


def test_eval_style_nb201_supernet_is_the_infer_cell_network():
    """``Supernet(affine=True)`` on NAS-Bench-201 with one-hot weights is NetworkNB201 with
    AutoDL's InferCells (``cell_affine=True``: convs without bias, affine BatchNorm): the
    supernet's selected ops renamed into the discrete network give the same training-mode
    logits, and the parameter trees agree in what each side has (the supernet's cells hold
    no conv bias, the affine-free search style would)."""
    from flax import traverse_util

    sp = spaces.get("nb201")
    g = G.Genotype.from_nb201_str("|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
                                  "none~2|")
    model = supernet.Supernet("nb201", 10, C=2, layers=1, affine=True, track_running_stats=False, lowering="conv")
    alpha = G.to_alpha(sp, g)
    net = networks.NetworkNB201(g, C=2, N=1, cell_affine=True, track_running_stats=False)
    x = jax.random.normal(jax.random.key(8), (4, 8, 8, 3))

    @jax.jit  # one program: initialisations, renaming, both forwards
    def run():
        v = proxies.init_variables(model, jax.random.key(6), alpha, (1, 8, 8, 3))
        vd = _discrete_variables(sp, v, g)
        own = net.init({"params": jax.random.key(7)}, x[:1], train=True)
        got = model.apply(v, x, alpha, train=True, normalized=True, mutable=["batch_stats"])[0]
        want = net.apply(vd, x, train=True, mutable=["batch_stats"])[0]
        return v, vd, own, got, want

    v, vd, own, got, want = run()
    assert jax.tree.structure(vd["params"]) == jax.tree.structure(own["params"])
    assert not any(k[-1] == "bias" and str(k[0]).startswith("cell") and "Conv" in str(k[-2])
                   for k in traverse_util.flatten_dict(v["params"]))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_forward_mode_synflow_is_used_only_where_every_derivative_is_nonnegative():
    """``forward=True`` (one jvp) equals Synflow only when no BatchNorm is kept and no op can
    output a negative value; the scorer picks it by :func:`proxies.forward_synflow_exact`.
    A network with a negative activation shows why: there the jvp's signed sum differs."""
    sn = lambda space: supernet.Supernet(space, 10, C=2, layers=3)  # noqa: E731
    assert proxies.forward_synflow_exact(sn("darts"), "none")
    assert proxies.forward_synflow_exact(supernet.Supernet("nb201", 10, C=2, layers=1), "none")
    assert not proxies.forward_synflow_exact(supernet.Supernet("nb201", 10, C=2, layers=1), "nb201_reference")
    assert not proxies.forward_synflow_exact(sn("darts"), "keep")
    assert not proxies.forward_synflow_exact(sn("s4"), "none")  # RobustDARTS's noise op
    assert not proxies.forward_synflow_exact(Small(), "none")  # not a supernet: not known

    class Signed(nn.Module):  # conv -> BN (kept: negative outputs) -> ReLU -> dense
        @nn.compact
        def __call__(self, x, *, train):
            x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Conv(3, (3, 3), use_bias=False)(x)))
            return nn.Dense(4, use_bias=False)(jnp.mean(x, (1, 2)))

    with jax.enable_x64(True):
        m = Signed()
        v = m.init({"params": jax.random.key(0)}, jnp.zeros((1, 5, 5, 2)), train=True)
        x = jnp.ones((2, 5, 5, 2))  # two images: batch statistics centre them, ReLU cuts half
        rev, fwd = (proxies.synflow(m, v, x.shape, bn="keep", forward=f) for f in (False, True))
    assert not np.isclose(rev, fwd, rtol=1e-6)
