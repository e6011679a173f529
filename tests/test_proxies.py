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


@pytest.mark.usefixtures("fast_compile")
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
@pytest.mark.usefixtures("fast_compile")
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
