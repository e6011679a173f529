import itertools

import chex

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdarts import Supernet, count_params, genotype, init_alpha, mixing_weights, ops, spaces, supernet
from jaxdarts.supernet import check_alpha

from conftest import fast_compiles
from reference import reference_logits


FAST = "conv"
"""The lowering of most tests here: grouped-conv depthwise compiles ~3x faster; the taps
form is checked equal in test_ops and against the reference below."""


def _init(model, alpha, x):
    return jax.jit(lambda a, x: model.init({"params": jax.random.key(1), "noise": jax.random.key(2)}, x, a,
                                           train=False))(alpha, x)


def _regroup(tree, model, to_loop):
    """A supernet variable tree with the edges regrouped for ``edge_loop=to_loop``: each
    edge's slice moved from its group in ``model.edge_loop``'s layout to its new group."""
    space = spaces.get(model.space)
    out = {}
    for name, sub in tree.items():
        if not name.startswith("cell_"):
            out[name] = sub
            continue
        i = int(name.split("_")[1])
        ctype = space.cell_type_of(i, model.layers)
        old = supernet.edge_groups(space, ctype, ctype == "reduce", None, model.edge_loop)
        new = supernet.edge_groups(space, ctype, ctype == "reduce", None, to_loop)
        where = {e: (g.name, j) for g in old for j, e in enumerate(g.edges)}
        cell = {k: v for k, v in sub.items() if not k.startswith("edges_")}
        for g in new:
            if any(where[e][0] not in sub for e in g.edges):  # parameter-free ops only (S1's groups)
                assert all(where[e][0] not in sub for e in g.edges)
                continue
            per_edge = [jax.tree.map(lambda a, j=where[e][1]: a[j], sub[where[e][0]]) for e in g.edges]
            cell[g.name] = jax.tree.map(lambda *xs: jnp.stack(xs), *per_edge)
        out[name] = cell
    return out


@pytest.mark.parametrize("space,kw", [("darts", {}), ("nb201", {}), ("s1", {}), ("darts", {"partial_channels": 2})])
def test_scan_and_vmap_edge_loops_compute_the_same_function(space, kw, x64):
    """The scanned cell (one mixed-op body looped over the edges) against the edge groups
    batched in dependency waves: outputs, BatchNorm statistics, gradients in the weights
    and alpha, with the same parameters regrouped edge by edge. DARTS: normal cells scan
    all 14 edges, reduction cells vmap the 8 strided ones and scan the 6 inner ones;
    NAS-Bench-201 scans all 6; S1's ragged op lists keep the waves; PC-DARTS partial
    channels with edge scales. In float64: only the order of the node sums differs."""
    sp = spaces.get(space)
    layers = 1 if sp.macro == "nb201" else 3
    mk = lambda loop: Supernet(space, 10, C=4, layers=layers, lowering=FAST, edge_loop=loop, **kw)
    vm, sc = mk("vmap"), mk("scan")
    x = jax.random.normal(jax.random.key(3), (4, 8, 8, 3), jnp.float64)
    alpha = init_alpha(space, jax.random.key(0), scale=1.0)
    w = mixing_weights(space, alpha)
    if kw.get("partial_channels"):
        w = {**w, "edges": {t: jax.random.uniform(jax.random.key(5), a.shape[:-1], minval=0.3) for t, a in w.items()}}
    v = _init(vm, alpha, x)
    v_sc = {k: _regroup(t, vm, "scan") for k, t in v.items()}
    assert jax.tree.structure(v_sc) == jax.tree.structure(_init(sc, alpha, x))
    if space == "s1":  # nothing to scan: the same groups
        assert all(not g.scan for t in ("normal", "reduce") for g in supernet.edge_groups(sp, t, t == "reduce"))

    def run(model, v, w):
        def loss(p, w):
            out, upd = model.apply({**v, "params": p}, x, w, train=True, normalized=True, mutable=["batch_stats"])
            return jnp.sum(jnp.sin(out)), upd
        (l, upd), g = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(v["params"], w)
        return l, upd, g

    with fast_compiles():
        l1, upd1, (gp1, gw1) = jax.jit(lambda v, w: run(vm, v, w))(v, w)
        l2, upd2, (gp2, gw2) = jax.jit(lambda v, w: run(sc, v, w))(v_sc, w)
    assert l1.dtype == jnp.float64 and jax.tree.leaves(gp1)[0].dtype == jnp.float64
    np.testing.assert_allclose(l2, l1, rtol=1e-10)
    chex.assert_trees_all_close(upd2["batch_stats"], _regroup(upd1["batch_stats"], vm, "scan"), rtol=1e-9, atol=1e-12)
    chex.assert_trees_all_close(gp2, _regroup(gp1, vm, "scan"), rtol=1e-8, atol=1e-11)
    chex.assert_trees_all_close(gw2, gw1, rtol=1e-8, atol=1e-11)


def test_edge_loop_values_are_checked():
    from jaxdarts import config
    cfg = config.base()
    cfg.model.edge_loop = "loop"
    with pytest.raises(ValueError, match="config.model.edge_loop='loop' is not accepted; accepted: scan, vmap, auto"):
        config.validate(cfg)
    with pytest.raises(ValueError, match="edge_loop='loop' is not accepted; accepted: scan, vmap"):
        Supernet("darts", 10, C=4, layers=3, edge_loop="loop").init(
            jax.random.key(0), jnp.zeros((1, 8, 8, 3)), init_alpha("darts", jax.random.key(0)), train=False)


def test_darts_supernet_parameter_count_matches_reference():
    model = Supernet("darts", 10, C=16, layers=8, lowering=FAST)
    alpha = init_alpha("darts", jax.random.key(0))
    v = jax.eval_shape(lambda: _init(model, alpha, jnp.zeros((2, 32, 32, 3))))
    assert count_params(v["params"]) == 1_930_618
    assert alpha["normal"].shape == (14, 8) and alpha["reduce"].shape == (14, 8)
    assert float(jnp.abs(alpha["normal"]).max()) < 1e-2  # 1e-3 * N(0,1)


@pytest.mark.parametrize("space,lowering", [pytest.param("darts", "taps", marks=pytest.mark.xla_optimized),
                                            ("darts", "conv"), pytest.param("s1", "conv", marks=pytest.mark.slow)])
def test_batched_supernet_equals_per_edge_reference(space, lowering):
    """Edge grouping, and in the 'conv' lowering the stacked BatchNorms, against one module
    (and one BatchNorm) per op and edge; ragged S1 in the compact lowering only (CI time).
    The 'taps' lowering (an XLA:CPU lowering) compiles with XLA's optimisation passes."""
    model = Supernet(space, 10, C=4, layers=3, lowering=lowering)
    x = jax.random.normal(jax.random.key(3), (4, 8, 8, 3))
    alpha = init_alpha(space, jax.random.key(0), scale=1.0)
    with fast_compiles():  # initialisation and the reference (its ops in the 'conv' lowering): CI time
        v = _init(model, alpha, x)
        ref = jax.jit(lambda v, x, a: reference_logits(model, v, x, mixing_weights(space, a), lowering="conv"))(
            v, x, alpha)
    # the supernet in the lowering under test, compiled as a search compiles it
    out, _ = jax.jit(lambda v, x, a: model.apply(v, x, a, train=True, mutable=["batch_stats"]))(v, x, alpha)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("space,layers", [("darts", 3), pytest.param("amended_s1", 3, marks=pytest.mark.slow), ("s5", 3)])
def test_one_hot_alpha_computes_the_discrete_cell(space, layers):
    sp = spaces.get(space)
    model = Supernet(space, 10, C=4, layers=layers, lowering=FAST)
    x = jax.random.normal(jax.random.key(3), (4, 8, 8, 3))
    g = genotype.derive(sp, init_alpha(sp, jax.random.key(7), scale=1.0))
    v = _init(model, init_alpha(sp, jax.random.key(0)), x)
    fwd = jax.jit(lambda v, x, a: model.apply(v, x, a, train=True, normalized=True, mutable=["batch_stats"]))
    out, _ = fwd(v, x, genotype.to_alpha(sp, g))
    ref = jax.jit(lambda v, x: reference_logits(model, v, x, None, genotype=g))(v, x)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


RAGGED = spaces.SearchSpace(
    "test_ragged",
    {"normal": tuple(("skip_connect", "sep_conv_3x3", "max_pool_3x3") if e % 3 == 0 else ("skip_connect", "avg_pool_3x3")
                     for e in range(14)),
     "reduce": tuple(("max_pool_3x3", "avg_pool_3x3") for _ in range(14))},
    spaces.DARTS_EDGES)


def test_masked_slots_get_zero_weight_and_zero_gradient():
    mask = RAGGED.mask("normal")
    assert RAGGED.num_ops == 3 and mask.sum() == 5 * 3 + 9 * 2
    alpha = init_alpha(RAGGED, jax.random.key(0))
    alpha = {k: v + 50.0 * (1 - RAGGED.mask(k)) for k, v in alpha.items()}  # huge logits on padding
    w = mixing_weights(RAGGED, alpha)
    assert float(jnp.abs(w["normal"][~mask]).max()) == 0.0
    np.testing.assert_allclose(w["normal"].sum(-1), 1.0, rtol=1e-6)
    model = Supernet(RAGGED, 10, C=4, layers=3, lowering=FAST)
    x = jax.random.normal(jax.random.key(3), (2, 8, 8, 3))
    v = _init(model, alpha, x)

    def loss(a):
        out, _ = model.apply(v, x, a, train=True, mutable=["batch_stats"])
        return jnp.sum(out ** 2)

    g = jax.jit(jax.grad(loss))(alpha)
    assert float(jnp.abs(g["normal"][~mask]).max()) == 0.0
    assert float(jnp.abs(g["normal"][mask]).max()) > 0.0  # gradient flows to real ops
    assert float(jnp.abs(g["reduce"]).max()) > 0.0


def test_wrong_alpha_shapes_and_names_raise():
    model = Supernet("darts", 10, C=4, layers=3, lowering=FAST)
    x = jnp.zeros((2, 8, 8, 3))
    bad = {"normal": jnp.zeros((14, 7)), "reduce": jnp.zeros((14, 8))}
    with pytest.raises(ValueError, match=r"alpha\['normal'\] has shape \(14, 7\).*expects \(14, 8\)"):
        model.init(jax.random.key(0), x, bad, train=False)
    with pytest.raises(ValueError, match="alpha keys.*expected"):
        check_alpha(spaces.get("darts"), {"normal": jnp.zeros((14, 8))})
    with pytest.raises(ValueError, match="unknown search space 'dartz'; accepted: darts"):
        spaces.get("dartz")


def test_per_cell_and_fixed_edge_spaces():
    s2 = spaces.get("amended_s2")
    assert s2.alpha_shapes() == {"normal": (18, 8, 2), "reduce": (2, 8, 2)}
    assert spaces.get("amended_s1").edges == ((0, 0), (0, 1), (1, 0), (1, 2), (2, 0), (2, 3), (3, 0), (3, 4))
    with pytest.raises(ValueError, match="one alpha per cell for 20 cells; got layers=8"):
        Supernet("amended_s2", 10, C=4, layers=8, lowering=FAST).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)),
                                                       init_alpha("amended_s2", jax.random.key(0)), train=False)
    s1 = spaces.get("s1")
    assert s1.ops["normal"][5] == ("max_pool_3x3", "skip_connect") and s1.ops["reduce"][6] == ("max_pool_3x3", "sep_conv_3x3")


def test_s5_is_the_papers_81_architecture_space():
    """RobustDARTS Section 3: one intermediate node, {sep3, skip, max3} on both of its edges,
    normal and reduce: every one-hot choice derives to a distinct genotype, 3^4 = 81."""
    s5 = spaces.get("s5")
    assert s5.steps == 1 and s5.edges == ((0, 0), (0, 1)) and s5.alpha_shapes() == {"normal": (2, 3), "reduce": (2, 3)}
    assert set(s5.ops["normal"] + s5.ops["reduce"]) == {("sep_conv_3x3", "skip_connect", "max_pool_3x3")}
    eye = np.eye(3)
    found = set()
    for n0, n1, r0, r1 in itertools.product(range(3), repeat=4):
        alpha = {"normal": jnp.asarray(eye[[n0, n1]]), "reduce": jnp.asarray(eye[[r0, r1]])}
        g = genotype.derive(s5, alpha)
        assert g.normal_concat == (2,) and len(g.normal) == 2
        found.add(g.to_pytorch_str())
    assert len(found) == 81
    assert spaces.get("darts").steps == 4  # the RobustDARTS code's "s5" is this space


def test_search_drop_path_drops_whole_mixed_op_outputs():
    """RobustDARTS's Cell.forward drops each mixed-op output (identity ops included): a cell
    of one-hot skip edges with drop probability ~1 outputs zeros; dropping per op (the
    other scope) never drops the skip, so the cell outputs s0' + s1'."""
    from jaxdarts.supernet import SearchCell

    w = jnp.asarray(np.eye(3)[[1, 1]])  # both edges skip_connect
    s0, s1 = (jax.random.normal(jax.random.key(i), (6, 8, 8, 4)) for i in (3, 4))
    outs = {}
    for scope in ("edge", "op"):
        cell = SearchCell(spaces.get("s5"), "normal", 4, False, False, 4, True, FAST, scope)
        v = cell.init({"params": jax.random.key(1), "dropout": jax.random.key(2)}, s0, s1, w)
        outs[scope], _ = cell.apply(v, s0, s1, w, 1 - 1e-7, rngs={"dropout": jax.random.key(5)},
                                    mutable=["batch_stats"])
        clean, _ = cell.apply(v, s0, s1, w, 0.0, mutable=["batch_stats"])
    assert outs["edge"].shape == (6, 8, 8, 4)
    np.testing.assert_array_equal(outs["edge"], 0.0)
    np.testing.assert_allclose(outs["op"], clean, rtol=1e-6)
    assert float(jnp.abs(clean).mean()) > 0.1
    with pytest.raises(ValueError, match="drop_path_scope='cell' is not accepted; accepted: edge, op"):
        cell = SearchCell(spaces.get("s5"), "normal", 4, False, False, 4, True, FAST, "cell")
        cell.init({"params": jax.random.key(1)}, s0, s1, w)


def test_nb201_supernet_runs_and_alpha_gradient_flows():
    model = Supernet("nb201", 10, C=4, layers=1, lowering=FAST)
    alpha = init_alpha("nb201", jax.random.key(0))
    assert alpha["normal"].shape == (6, 5)
    x = jax.random.normal(jax.random.key(3), (2, 8, 8, 3))
    v = _init(model, alpha, x)
    g = jax.jit(jax.grad(lambda a: jnp.sum(model.apply(v, x, a, train=True, mutable=["batch_stats"])[0] ** 2)))(alpha)
    assert g["normal"].shape == (6, 5) and float(jnp.abs(g["normal"]).sum()) > 0


@pytest.mark.slow
@pytest.mark.xla_optimized  # the rematerialisation barriers must survive XLA's passes
def test_remat_supernet_same_outputs_and_derivatives(x64):
    """``remat=True`` (``kernels.remat`` per cell) changes nothing but memory: logits,
    BatchNorm statistics, drop-path masks, gradients and (forward-over-reverse) mixed products."""
    from jaxdarts import hypergrad
    from jaxdarts.search import cross_entropy

    x = jax.random.normal(jax.random.key(3), (4, 8, 8, 3), jnp.float64)
    labels = jnp.arange(4) % 10
    alpha = init_alpha("tiny", jax.random.key(0), scale=1.0)
    plain, rematted = (Supernet("tiny", 10, C=4, layers=3, remat=r, lowering=FAST) for r in (False, True))
    v = jax.tree.map(lambda a: a.astype(jnp.float64), _init(plain, alpha, x))
    rngs = {"dropout": jax.random.key(5), "noise": jax.random.key(6)}

    def loss_fn(model):
        def loss(params, a, x):
            out, mut = model.apply({"params": params, "batch_stats": v["batch_stats"]}, x, a, train=True,
                                   drop_prob=0.3, rngs=rngs, mutable=["batch_stats"])
            return cross_entropy(out, labels) + 1e-3 * sum(jnp.sum(b) for b in jax.tree.leaves(mut))
        return loss

    def derivatives(model):
        loss = loss_fn(model)
        p = v["params"]
        # the mixed product is jvp-of-grad, the same path as hypergrad.hvp (left out: CI time)
        return jax.jit(lambda p, a: (loss(p, a, x), jax.grad(loss, argnums=(0, 1))(p, a, x),
                                     hypergrad.mixed_product(loss, p, a, x, p)))(p, alpha)

    with fast_compiles():  # the reference without rematerialisation: CI time
        want = derivatives(plain)
    for got, want in zip(jax.tree.leaves(derivatives(rematted)), jax.tree.leaves(want)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
