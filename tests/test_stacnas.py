"""StacNAS: the simultaneous one-level step, stage-2 construction, edge ranking, the
two-stage program (resume, --max_epochs across stages)."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny_config
from jaxdarts import config as config_lib
from jaxdarts import genotype as G
from jaxdarts import io as io_lib
from jaxdarts import search, spaces
from jaxdarts.methods import stacnas

STAGE1 = ("max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3", "none")


def tiny_stacnas(**overrides):
    """Two tiny stages (2 and 3 cells, C=4, 8px): the battery's stage-1 program too."""
    return tiny_config("stacnas", space="stacnas_stage1", epochs=2,
                       **{"stacnas.stage1_layers": 2, "stacnas.stage2_layers": 3, "model.layers": 2, **overrides})


@pytest.mark.slow
def test_simultaneous_step_is_one_joint_gradient_and_both_optimisers():
    """The fused step against (a) the two updates computed here from one jax.grad of the
    training loss w.r.t. (w, alpha) on the step's batch, and (b) the engine's unfused
    simultaneous path (two passes: architecture step, weight step, both at the old point);
    the sequential one-level step (alpha first) differs. In the warm-up alpha is kept."""
    cfg = tiny_stacnas(steps_per_epoch=1)
    task = search.SearchTask.from_config(cfg)
    assert task._fused_one_level and task.update_order == "simultaneous"
    s0 = task.init_state()
    s0 = s0.replace(alpha=jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(5), a.shape), s0.alpha))
    tb_raw, vb_raw = task.train_stream.batch(0, 0), task.val_stream.batch(0, 0)
    sched = {**task.schedule_values(0), "arch_update": np.float32(1)}
    unfused = dataclasses.replace(task, method=search.Method("stacnas_unfused", update_order="simultaneous",
                                                             arch_grad=search.estimator_arch_grad))
    sequential = dataclasses.replace(task, method=search.Method("stacnas_seq", update_order="alpha_first"))

    @jax.jit
    def run(s0, tb_raw, vb_raw, sched):
        k = search.fold_key(s0.rng, s0.step)
        tb, _, _ = task.step_batches(k, tb_raw, vb_raw, sched)

        def loss(w, a):
            logits, aux, _ = task.apply(w, s0.batch_stats, a, tb, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, tb["label"]).mean()

        gw, ga = jax.grad(loss, argnums=(0, 1))(s0.params, s0.alpha)
        manual = (gw, ga)  # the optimisers' first steps are transcribed below, in NumPy
        warm = task.search_step(s0, tb_raw, vb_raw, {**sched, "arch_update": jnp.float32(0)})[0]
        return (manual, task.search_step(s0, tb_raw, vb_raw, sched), unfused.search_step(s0, tb_raw, vb_raw, sched)[0],
                sequential.search_step(s0, tb_raw, vb_raw, sched)[0], warm)

    (gw, ga), (fused, metrics), two_pass, seq, warm = jax.device_get(run(s0, tb_raw, vb_raw, sched))
    # the reference's first steps (StacNAS search.py): clip_grad_norm_ on the weights' raw
    # gradients, then torch SGD (weight decay added, momentum buffer = d at the first step);
    # torch Adam on alpha (L2 weight decay in the gradient, bias-corrected first step)
    o = cfg.optim
    w0, a0 = jax.device_get(s0.params), jax.device_get(s0.alpha)
    norm = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in jax.tree.leaves(gw)))
    clip = min(1.0, o.grad_clip / (norm + 1e-6))
    mw = jax.tree.map(lambda w, g: w - o.lr * (g * clip + o.weight_decay * w), w0, gw)
    b1, b2 = o.arch_betas

    def adam_first(a, g):
        d = g + o.arch_weight_decay * a
        m, v = (1 - b1) * d / (1 - b1), (1 - b2) * d * d / (1 - b2)
        return a - o.arch_lr * m / (np.sqrt(v) + 1e-8)

    ma = jax.tree.map(adam_first, a0, ga)
    close = lambda x, y: chex.assert_trees_all_close(x, y, rtol=2e-5, atol=1e-6)
    close(fused.params, mw)
    close(fused.alpha, ma)
    close(two_pass.params, fused.params)
    close(two_pass.alpha, fused.alpha)
    assert metrics["g1_norm"] > 0 and metrics["train_loss"] > 0
    differs = lambda x, y: not all(np.allclose(u, v, rtol=1e-5, atol=1e-6)
                                   for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y)))
    assert differs(seq.params, fused.params)  # sequential: the weight step at the new alpha
    chex.assert_trees_all_equal(warm.alpha, jax.device_get(s0.alpha))
    close(warm.params, mw)


def test_stage2_op_lists_from_a_hand_made_stage1_alpha():
    sp = spaces.get("stacnas_stage1")
    a = np.zeros((14, 5), np.float32)
    a[0] = [0.1, 0.2, 0.3, 0.4, 9.0]  # none is largest: excluded -> dil_conv_3x3
    a[1] = [0.5, 0.5, 0.1, 0.1, 0.0]  # tie: the first maximum (max_pool) wins
    a[2] = [0.0, 0.9, 0.1, 0.1, 0.0]  # skip
    a[3] = [0.0, 0.0, 0.7, 0.1, 0.0]  # sep3
    groups = stacnas.activated_groups(sp, {"normal": a, "reduce": a[::-1].copy()})
    assert groups["normal"][:4] == ["dil_conv_3x3", "max_pool_3x3", "skip_connect", "sep_conv_3x3"]
    ops = stacnas.stage2_ops(groups)
    assert ops["normal"][:4] == (("dil_conv_3x3", "dil_conv_5x5", "none"), ("avg_pool_3x3", "max_pool_3x3", "none"),
                                 ("skip_connect", "skip_connect@2", "none"), ("sep_conv_3x3", "sep_conv_5x5", "none"))
    assert stacnas.stage2_ops(groups, "dedupe")["normal"][2] == ("skip_connect", "none")
    # ragged in the deduplicated form: padded and masked; the space registers once, by content
    sp2 = stacnas.stage2_space(stacnas.stage2_ops(groups, "dedupe"))
    assert sp2.num_ops == 3 and sp2.mask("normal")[2].tolist() == [True, True, False]
    assert stacnas.stage2_space(stacnas.stage2_ops(groups, "dedupe")) is sp2
    # per-cell logits are averaged over the cells: edge 0 of cell A alone picks max_pool, of
    # cell B dil_conv_3x3, the elementwise maximum max_pool again; their mean picks sep_conv_3x3
    ca, cb = a.copy(), a.copy()
    ca[0], cb[0] = [2.0, 0.0, 1.5, 0.0, 0.0], [0.0, 0.0, 1.5, 1.6, 0.0]
    pc = np.stack([ca, cb])
    one = lambda x: stacnas.activated_groups(sp, {"normal": x, "reduce": x})["normal"][0]
    assert (one(ca), one(cb), one(np.maximum(ca, cb))) == ("max_pool_3x3", "dil_conv_3x3", "max_pool_3x3")
    assert one(pc) == "sep_conv_3x3"
    with pytest.raises(ValueError, match="stage-1 winner 'noise' has no StacNAS group"):
        stacnas.stage2_ops({"normal": ["noise"]})


def test_edges_ranked_by_logits_and_by_softmax_disagree_on_a_crafted_alpha():
    """Node 0 has edges from c_{k-2} and c_{k-1} only (both kept); node 1 has three: edge 2
    (logits 3.0 vs 2.9: the larger logit, a softmax of ~0.5) and edge 4 (logit 2.0 against
    -5: a softmax of ~1) compete with edge 3 (low). Logits keep edge 2, softmax edge 4."""
    ops = {t: tuple(("sep_conv_3x3", "sep_conv_5x5", "none") for _ in range(14)) for t in ("normal", "reduce")}
    sp = stacnas.stage2_space(ops)
    a = np.full((14, 3), -5.0, np.float32)
    a[:, 0] = 0.0
    a[2] = [3.0, 2.9, -5.0]
    a[3] = [-1.0, -5.0, -5.0]
    a[4] = [2.0, -5.0, -5.0]
    alpha = {"normal": a, "reduce": a}
    by_logits = stacnas._derive_fn("logits")(sp, alpha)
    by_softmax = G.derive(sp, alpha)
    assert by_logits.normal[2:4] == (("sep_conv_3x3", 0), ("sep_conv_3x3", 2))  # edges 2 (input 0) and 4 (input 2)
    assert by_softmax.normal[2:4] == (("sep_conv_3x3", 2), ("sep_conv_3x3", 1))  # edges 4 and 3
    # the duplicated skip of the reference's group is its op in the genotype
    sk = stacnas.stage2_space({t: (("skip_connect", "skip_connect@2", "none"),) * 14 for t in ("normal", "reduce")})
    b = np.zeros((14, 3), np.float32)
    b[:, 1] = 1.0
    assert {op for op, _ in G.derive(sk, {"normal": b, "reduce": b}).normal} == {"skip_connect"}


def test_train_portion_one_only_for_one_level():
    config_lib.validate(tiny_stacnas())
    cfg = tiny_config("darts")
    cfg.data.train_portion = 1.0
    with pytest.raises(config_lib.ConfigError, match="train_portion=1 leaves no architecture split for "
                                                     "config.estimator='first_order'"):
        config_lib.validate(cfg)
    with pytest.raises(config_lib.ConfigError, match="config.estimator='first_order' is not accepted by method "
                                                     "'stacnas'; accepted: one_level"):
        config_lib.validate(tiny_stacnas(estimator="first_order", **{"data.train_portion": 0.5}))


@pytest.mark.slow
def test_two_stage_program_resumes_and_counts_epochs_across_stages(tmp_path):
    cfg = tiny_stacnas()
    full = search.run(cfg, str(tmp_path / "full"), log=lambda *_: None)
    assert full["finished"] and full["stage"] == 2
    info = io_lib.read_json(str(tmp_path / "full" / "stage1.json"))
    assert set(info["groups"]) == {"normal", "reduce"} and len(info["groups"]["normal"]) == 14
    sp2 = spaces.get(full["stage2_space"])
    assert [list(o) for o in sp2.ops["normal"]] == info["stage2_ops"]["normal"]
    assert len(io_lib.read_jsonl(str(tmp_path / "full" / "stage2" / "metrics.jsonl"))) == 2
    m1 = io_lib.read_jsonl(str(tmp_path / "full" / "stage1" / "metrics.jsonl"))
    assert all(r["g1_norm"] > 0 for r in m1)  # alpha trained in every epoch (no warm-up)
    # the same search in three invocations: 3 epochs (stage 1 + one of stage 2), 0 (no-op), then the rest
    part = str(tmp_path / "part")
    out = search.run(cfg, part, log=lambda *_: None, max_epochs=3)
    assert out["stage"] == 2 and not out["finished"] and out["epochs_run"] == 3
    logs = []
    out = search.run(cfg, part, log=logs.append)
    assert any("resumed" in l for l in logs)
    assert out == full
    assert io_lib.read_json(str(tmp_path / "part" / "genotype.json")) == io_lib.read_json(
        str(tmp_path / "full" / "genotype.json"))
    from jaxdarts import report  # the program's report shows both stages and the final cells

    page = report.render_html([report.load_run(str(tmp_path / "full"))])
    assert all(f"id='section-{s}'" in page for s in ("cells", "stages", "curves", "alpha", "config"))


# ------------------------------------------------------------------ analyses
def test_pooled_correlation_is_pearson_of_position_centred_features():
    from jaxdarts import analysis

    rng = np.random.default_rng(0)
    base = rng.normal(size=(60, 4, 4, 3))
    feats = np.stack([base + 0.5 * rng.normal(size=base.shape), -base + rng.normal(size=base.shape),
                      rng.normal(size=base.shape) + 3.0 * np.arange(3)])  # a per-position offset: centred away
    acc = analysis.PooledCorrelation()
    for s in range(0, 60, 25):  # streamed in uneven batches
        acc.update(feats[:, s:s + 25])
    got = acc.result()
    flat = feats.reshape(3, 60, -1)
    centred = (flat - flat.mean(1, keepdims=True)).reshape(3, -1)
    np.testing.assert_allclose(got, np.corrcoef(centred), rtol=1e-10, atol=1e-12)
    assert got[0, 1] < -0.5 < 0.5 < got[0, 0]


def test_gradient_confusion_on_hand_made_gradients():
    from jaxdarts import analysis

    g1, g2 = np.array([1.0, 2.0]), np.array([-3.0, 1.0])  # <g1, g2> = -1
    assert float(analysis.confusion_of_gradients(np.stack([g1, g2]))) == pytest.approx(1.0)
    assert float(analysis.confusion_of_gradients(np.stack([g1, g1]))) == 0.0  # aligned: no confusion
    g3 = np.array([-1.0, -2.0])  # the most conflicting pair wins: -<g1, g3> = 5
    assert float(analysis.confusion_of_gradients(np.stack([g1, g2, g3]))) == pytest.approx(5.0)
    # per-mini-batch gradients of 0.5 ||p - b||^2 are p - b: a closed form
    p = {"w": jnp.array([0.5, -1.0])}
    bs = jnp.array([[1.0, 1.0], [0.0, -3.0], [2.0, 0.0]])
    loss = lambda params, b: 0.5 * jnp.sum((params["w"] - b) ** 2)
    g = np.asarray(p["w"])[None] - np.asarray(bs)
    want = max(0.0, max(-g[i] @ g[j] for i in range(3) for j in range(3) if i != j))
    assert float(analysis.gradient_confusion(loss, p, bs)) == pytest.approx(want)


@pytest.mark.slow
def test_op_outputs_before_mixing_and_their_correlation():
    """Per-op outputs of cell 0's input edges: zeros for ``none``, independent of the
    mixing weights (which change the logits), distinct per op; the correlation of an edge's
    ops has a unit diagonal (NaN for ``none``) and is symmetric."""
    from jaxdarts import analysis, supernet

    model = supernet.Supernet("stacnas_stage1", 10, C=4, layers=2, lowering="conv")
    x = jax.random.normal(jax.random.key(0), (6, 8, 8, 1))
    a = supernet.init_alpha(model.space, jax.random.key(1))
    v = model.init(jax.random.key(2), x, a, train=False)
    b = jax.tree.map(lambda t: t + jax.random.normal(jax.random.key(3), t.shape), a)
    fn = jax.jit(lambda al: (analysis.op_outputs(model, v, x, al, 0, (0, 1)), model.apply(v, x, al, train=False)))
    (oa, la), (ob, lb) = jax.device_get(fn(a)), jax.device_get(fn(b))
    assert oa[0].shape == (5, 6, 4, 4, 8)  # cell 0 of 2 is a reduction cell (stride 2, 2C)
    assert np.all(oa[0][4] == 0) and np.all(oa[1][4] == 0)  # none
    chex.assert_trees_all_close(oa, ob, rtol=1e-6, atol=1e-6)
    assert not np.allclose(la, lb, atol=1e-5)
    assert all(not np.allclose(oa[0][i], oa[0][j]) for i in range(4) for j in range(i + 1, 4))
    corr = analysis.operator_correlation(model, v, [x[:3], x[3:]], a, 0, (0,))[0]
    # Appendix B on all six samples at once: features centred per position over the samples
    f = np.asarray(oa[0][:4], np.float64).reshape(4, 6, -1)
    xc = f - f.mean(1, keepdims=True)
    num = np.einsum("and,bnd->ab", xc, xc)
    ref = num / np.sqrt(np.outer(np.diag(num), np.diag(num)))
    np.testing.assert_allclose(corr[:4, :4], ref, rtol=1e-6, atol=1e-9)
    assert np.abs(ref[np.triu_indices(4, 1)]).max() < 0.999 and np.isnan(corr[4, 4])
    with pytest.raises(ValueError, match="edge=14 is not an edge of space 'stacnas_stage1'; accepted: 0..13"):
        analysis.op_outputs(model, v, x, a, 0, (14,))


def test_per_cell_stage2_space_has_different_op_lists_per_cell():
    """alpha_share=False: every stage-1 cell activates its own groups; stage-2 cell j of a
    type takes stage-1 cell floor(j n1 / n2); the supernet builds each cell from its own
    lists (ragged masks per cell) and the genotype has one gene list per cell."""
    from jaxdarts import supernet

    sp1 = stacnas.per_cell_space("stacnas_stage1", 3)  # cells: reduce, reduce, normal (layers 3: 1 and 2 reduce)
    assert sp1.alpha_shapes() == {"normal": (1, 14, 5), "reduce": (2, 14, 5)}
    rng = np.random.default_rng(0)
    alpha1 = {t: rng.normal(size=s) for t, s in sp1.alpha_shapes().items()}
    alpha1["reduce"][0, :, 1] = 9.0  # reduce cell 0: skip everywhere
    alpha1["reduce"][1, :, 2] = 9.0  # reduce cell 1: sep3 everywhere
    groups = stacnas.activated_groups(sp1, alpha1, per_cell=True)
    assert groups["reduce"][0] == ["skip_connect"] * 14 and groups["reduce"][1] == ["sep_conv_3x3"] * 14
    ops = stacnas.stage2_ops(groups, "dedupe")
    sp2 = stacnas.stage2_space(ops, layers=4)  # 4 cells: normal, reduce, reduce, normal
    assert sp2.alpha_shapes() == {"normal": (2, 14, 3), "reduce": (2, 14, 3)}
    assert sp2.padded_ops("reduce", 0)[0] == ("skip_connect", "none", None)
    assert sp2.padded_ops("reduce", 1)[0] == ("sep_conv_3x3", "sep_conv_5x5", "none")
    assert sp2.mask("reduce").shape == (2, 14, 3) and not sp2.mask("reduce")[0, 0, 2]
    assert sp2.cell_ops["normal"][0] == sp2.cell_ops["normal"][1] == ops["normal"][0]  # one stage-1 normal cell
    model = supernet.Supernet(sp2, 10, C=4, layers=4, lowering="conv")
    x = jnp.ones((2, 8, 8, 1))
    a = supernet.init_alpha(sp2, jax.random.key(0))
    v = model.init(jax.random.key(1), x, a, train=False)
    paths = lambda cell: [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(
        v["params"][cell])[0]]
    assert any("sep_conv_5x5" in p for p in paths("cell_2"))  # reduce cell 1: the sep group
    assert not any("sep_conv" in p for p in paths("cell_1"))  # reduce cell 0: the skip group
    assert model.apply(v, x, a, train=False).shape == (2, 10)
    g = G.derive(sp2, a)
    assert g.per_cell and len(g.reduce) == 2 and {op for op, _ in g.reduce[0]} == {"skip_connect"}
    chex.assert_trees_all_equal(G.to_alpha(sp2, g)["reduce"].shape, (2, 14, 3))


def test_hierarchical_grouping_recovers_block_correlations():
    from jaxdarts import analysis

    names = ["max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "none"]
    c = np.full((7, 7), 0.05)
    for a, b, r in ((0, 1, 0.52), (2, 3, 0.38), (4, 5, 0.27), (2, 4, 0.15), (0, 4, -0.13)):  # Table 5's values
        c[a, b] = c[b, a] = r
    np.fill_diagonal(c, 1.0)
    c[6, :] = c[:, 6] = np.nan  # none: no variance
    groups = analysis.group_ops(c, names, threshold=0.2)
    assert groups == (("max_pool_3x3", "avg_pool_3x3"), ("sep_conv_3x3", "sep_conv_5x5"),
                      ("dil_conv_3x3", "dil_conv_5x5"), ("none",))
    assert analysis.group_ops(c, names, threshold=0.3)[2:] == (("dil_conv_3x3",), ("dil_conv_5x5",), ("none",))
    assert len(analysis.group_ops(c, names, threshold=-1.0)) == 2  # everything with a defined correlation merges
