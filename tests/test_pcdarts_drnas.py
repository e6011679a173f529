"""PC-DARTS and DrNAS, the plug-ins added without an engine edit, against transcriptions of
their reference code's logic (PC-DARTS ``model_search.py``; DrNAS ``utils.py`` /
``model_search.py``) and closed forms (Dirichlet moments and reparameterised gradients,
scipy's Dirichlet entropy for the KL term); their quick configs and CLI runs with resume."""

import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from conftest import REPO, tiny_config
from conftest import _cache as TEST_CACHE
from jaxdarts import config as config_lib
from jaxdarts import genotype, io as io_lib, ops, search, spaces, supernet
from jaxdarts.methods import drnas, pcdarts

EPS = 1e-5  # PyTorch BatchNorm


# ------------------------------------------------------------------ PC-DARTS
def _np_pool(x, kind, stride):
    """NCHW 3x3 pooling, padding 1 (max over real pixels; average excluding padding)."""
    n, c, h, w = x.shape
    fill = -np.inf if kind == "max" else 0.0
    xp = np.full((n, c, h + 2, w + 2), fill)
    xp[:, :, 1:-1, 1:-1] = x
    cnt = np.zeros((h + 2, w + 2))
    cnt[1:-1, 1:-1] = 1
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    out = np.zeros((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            win = xp[:, :, i * stride:i * stride + 3, j * stride:j * stride + 3]
            out[:, :, i, j] = win.max((2, 3)) if kind == "max" else win.sum((2, 3)) / cnt[
                i * stride:i * stride + 3, j * stride:j * stride + 3].sum()
    return out


def _np_bn(x):  # training mode, affine=False, biased variance
    m = x.mean((0, 2, 3), keepdims=True)
    v = x.var((0, 2, 3), keepdims=True)
    return (x - m) / np.sqrt(v + EPS)


def _np_pc_mixed_op(x, w, op_names, stride, k):
    """PCD:model_search.py MixedOp.forward, transcribed (NCHW): ops on the first C/k
    channels, the rest bypassed (MaxPool2d(2, 2) on stride 2), concat, channel_shuffle."""
    dim_2 = x.shape[1]
    xtemp, xtemp2 = x[:, :dim_2 // k], x[:, dim_2 // k:]
    temp1 = 0.0
    for wk, name in zip(w, op_names):
        if name == "none":
            continue
        if name == "skip_connect":  # stride 1 only here
            y = xtemp
        else:
            y = _np_bn(_np_pool(xtemp, name[:3], stride))
        temp1 = temp1 + wk * y
    if stride == 2:
        n, c, h, ww = xtemp2.shape
        xtemp2 = xtemp2.reshape(n, c, h // 2, 2, ww // 2, 2).max((3, 5))
    ans = np.concatenate([temp1, xtemp2], axis=1)
    b, c, h, ww = ans.shape  # channel_shuffle(ans, k)
    return ans.reshape(b, k, c // k, h, ww).transpose(0, 2, 1, 3, 4).reshape(b, c, h, ww)


@pytest.mark.parametrize("stride,op_names,k", [
    (1, ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"), 4),
    (2, ("none", "max_pool_3x3", "avg_pool_3x3"), 2),
])
def test_partial_channel_mixed_op_is_the_reference_transcription(stride, op_names, k):
    rng = np.random.default_rng(stride)
    x = rng.normal(size=(3, 8, 6, 6))  # NCHW, as the reference
    w = rng.dirichlet(np.ones(len(op_names)))
    m = supernet.MixedOp(op_names, 8, stride, True, lowering="conv", partial=k)
    xj = jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32)
    variables = m.init(jax.random.key(0), xj, jnp.asarray(w, jnp.float32))
    out, _ = m.apply(variables, xj, jnp.asarray(w, jnp.float32), mutable=["batch_stats"])
    ref = _np_pc_mixed_op(x, w, op_names, stride, k)
    np.testing.assert_allclose(np.asarray(out).transpose(0, 3, 1, 2), ref, rtol=1e-4, atol=1e-5)


def test_partial_channels_shrink_the_ops_and_refuse_what_does_not_divide():
    x = jnp.zeros((2, 8, 8, 3))
    a = supernet.init_alpha("darts", jax.random.key(0))
    params = lambda k: jax.eval_shape(lambda: supernet.Supernet(  # shapes only: nothing runs
        "darts", 10, C=8, layers=3, partial_channels=k, lowering="conv").init(jax.random.key(1), x, a, train=True))[
        "params"]
    # the first normal cell's sep_conv_3x3 kernels: C=8 channels in and out at K=1, 2 at K=4
    grp = supernet.edge_groups(spaces.get("darts"), "normal", False)[0].name
    sep = lambda p: {l.shape for l in jax.tree.leaves(p["cell_0"][grp]["sep_conv_3x3"])}
    assert {s_[-1] for s_ in sep(params(1))} == {8} and {s_[-1] for s_ in sep(params(4))} == {2}
    with pytest.raises(ValueError, match="partial channels K=3 must divide"):
        params(3)


def test_edge_scales_act_as_scaled_op_weights_without_partial_channels():
    """K=1: scaling edge e's mixed-op output by s_e is the forward at op weights s_e w_e
    (the mixed op is linear in its weights): the edge-scale path against the op path."""
    space = spaces.get("s2")
    m = supernet.Supernet(space, 10, C=4, layers=3, lowering="conv")
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    a = supernet.init_alpha(space, jax.random.key(1), 1.0)
    w = supernet.mixing_weights(space, a)
    s = {t: jax.random.uniform(jax.random.key(2 + i), w[t].shape[:-1], minval=0.2, maxval=1.5)
         for i, t in enumerate(space.cell_types)}
    v = jax.jit(lambda: m.init(jax.random.key(3), x, a, train=True))()

    @jax.jit
    def both(v):
        return (m.apply(v, x, {**w, "edges": s}, train=True, normalized=True, mutable=["batch_stats"])[0],
                m.apply(v, x, {t: w[t] * s[t][:, None] for t in w}, train=True, normalized=True,
                        mutable=["batch_stats"])[0])

    with_edges, folded = both(v)
    np.testing.assert_allclose(with_edges, folded, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="weights\\['edges'\\] must hold"):
        m.apply(v, x, {**w, "edges": {"normal": s["normal"]}}, train=True, normalized=True, mutable=["batch_stats"])


def _np_weights2(beta, steps=4):
    """PCD:model_search.py forward: softmax of betas[0:2], then of each next node's slice."""
    e = lambda z: np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    out, start, n = [e(beta[0:2])], 2, 3
    for _ in range(steps - 1):
        out.append(e(beta[start:start + n]))
        start, n = start + n, n + 1
    return np.concatenate(out)


def _np_pcdarts_genotype(alpha, beta, primitives, steps=4):
    """PCD:model_search.py genotype()/_parse, transcribed."""
    e = np.exp(alpha - alpha.max(-1, keepdims=True))
    weights, weights2 = e / e.sum(-1, keepdims=True), _np_weights2(beta, steps)
    gene, n, start = [], 2, 0
    none = primitives.index("none")
    for i in range(steps):
        end = start + n
        W, W2 = weights[start:end].copy(), weights2[start:end].copy()
        for j in range(n):
            W[j, :] = W[j, :] * W2[j]
        edges = sorted(range(i + 2), key=lambda x: -max(W[x][k] for k in range(len(W[x])) if k != none))[:2]
        for j in edges:
            k_best = None
            for k in range(len(W[j])):
                if k != none and (k_best is None or W[j][k] > W[j][k_best]):
                    k_best = k
            gene.append((primitives[k_best], j))
        start, n = end, n + 1
    return gene


def test_edge_normalisation_and_derivation_are_the_reference_transcriptions():
    space = spaces.get("darts")
    cfg = config_lib.base("pcdarts")
    for seed in range(20):
        a = pcdarts.init_alpha(space, jax.random.key(seed), 1.0, cfg.pcdarts)
        np.testing.assert_allclose(supernet.node_softmax(space, a["betas"]["normal"]),
                                   _np_weights2(np.asarray(a["betas"]["normal"], np.float64)), rtol=1e-5)
        g = pcdarts.derive(space, a)
        for t in ("normal", "reduce"):
            ref = _np_pcdarts_genotype(np.asarray(a[t], np.float64), np.asarray(a["betas"][t], np.float64),
                                       list(ops.PRIMITIVES))
            assert [tuple(x) for x in getattr(g, t)] == ref, (seed, t)
    no_betas = pcdarts.init_alpha(space, jax.random.key(0), 1.0, _section(False))
    assert "betas" not in no_betas and pcdarts.derive(space, no_betas) == genotype.derive(space, no_betas)


def _section(edge_normalization):
    c = config_lib.base("pcdarts").pcdarts
    c.edge_normalization = edge_normalization
    return c


def test_pcdarts_engine_weights_carry_the_edge_softmax():
    """The engine's mixing weights for PC-DARTS (every forward, the summary): softmax(alpha)
    rows and each node's softmax of its betas as per-edge scales."""
    task = search.SearchTask.from_config(tiny_config("pcdarts", **{"model.partial_channels": 2}))
    state = task.init_state()
    assert set(state.alpha) == {"normal", "reduce", "betas"}
    assert state.alpha["betas"]["normal"].shape == (len(task.space.edges),)
    w = task.mixing_weights(state.alpha)
    np.testing.assert_allclose(w["edges"]["reduce"], _np_weights2(np.asarray(state.alpha["betas"]["reduce"],
                                                                             np.float64), task.space.steps), rtol=1e-5)
    np.testing.assert_allclose(w["normal"], supernet.mixing_weights(task.space, {
        t: state.alpha[t] for t in ("normal", "reduce")})["normal"])


# -------------------------------------------------------------------- DrNAS
def test_dirichlet_samples_have_the_closed_form_moments_and_mask():
    beta = jnp.array([[0.5, 1.0, 2.0, 4.0], [1.5, 1.5, 3.0, 0.7]])
    mask = jnp.array([[True, True, True, True], [True, False, True, True]])
    th = jax.vmap(lambda k: drnas.sample(k, beta, mask))(jax.random.split(jax.random.key(0), 40000))
    th = np.asarray(th, np.float64)
    b = np.where(np.asarray(mask), np.asarray(beta, np.float64), 0.0)
    b0 = b.sum(-1, keepdims=True)
    np.testing.assert_allclose(th.mean(0), b / b0, atol=4e-3)
    np.testing.assert_allclose(th.var(0), b * (b0 - b) / (b0 ** 2 * (b0 + 1)), atol=2e-3)
    assert (th[:, 1, 1] == 0).all() and np.allclose(th.sum(-1), 1, atol=1e-5)


def test_dirichlet_pathwise_gradient_matches_the_closed_form_mean_derivative():
    """E[theta . c] = beta . c / beta0 with beta = ELU(eta) + 1: the mean of the pathwise
    gradients over draws against the closed-form derivative (Monte Carlo, 3 sigma)."""
    eta = jnp.array([-0.7, 0.1, 0.4, 1.2, -0.2])
    c = jnp.array([1.0, -2.0, 0.5, 3.0, 0.0])
    mask = jnp.ones(5, bool)
    f = lambda e, k: drnas.sample(k, drnas.concentration(e), mask) @ c
    grads = np.asarray(jax.vmap(jax.grad(f), in_axes=(None, 0))(eta, jax.random.split(jax.random.key(1), 60000)),
                       np.float64)
    e64, c64 = np.asarray(eta, np.float64), np.asarray(c, np.float64)
    beta = np.where(e64 > 0, e64, np.expm1(e64)) + 1
    m = beta @ c64 / beta.sum()
    dbeta = np.where(e64 > 0, 1.0, np.exp(e64))
    exact = (c64 - m) / beta.sum() * dbeta
    se = grads.std(0) / math.sqrt(len(grads))
    assert np.all(np.abs(grads.mean(0) - exact) < 4 * se + 1e-4), (grads.mean(0), exact, se)


def test_kl_term_is_minus_entropy_minus_log_gamma_k_from_scipy():
    """KL(Dir(a) || Dir(1)) = -H(Dir(a)) - ln Gamma(K) (Dir(1) has density Gamma(K)), per
    edge over its real ops: S1's ragged op lists test the padding."""
    for name in ("nb201", "s1"):
        space = spaces.get(name)
        alpha = supernet.init_alpha(space, jax.random.key(4), 1.5)
        ref = 0.0
        for t in space.cell_types:
            mask = np.asarray(space.mask(t))
            a = np.asarray(drnas.concentration(alpha[t]), np.float64)
            for row, mrow in zip(a.reshape(-1, a.shape[-1]), np.broadcast_to(mask, a.shape).reshape(-1, a.shape[-1])):
                k = int(mrow.sum())
                if k > 1:
                    ref += -scipy.stats.dirichlet(row[mrow]).entropy() - math.lgamma(k)
        np.testing.assert_allclose(float(drnas.kl_to_uniform(space, alpha)), ref, rtol=1e-4)


def test_drnas_weights_are_the_mean_without_a_key_and_kl_gradient_is_added(x64):
    task = search.SearchTask.from_config(tiny_config("drnas", arch_start_epoch=0))
    state = task.init_state()
    state = state.replace(alpha=jax.tree.map(lambda a: a * 300.0, state.alpha))  # eta ~ 0.3: a visible KL
    beta = drnas.concentration(state.alpha["normal"])
    np.testing.assert_allclose(task.mixing_weights(state.alpha)["normal"], beta / beta.sum(-1, keepdims=True))
    k = search.fold_key(state.rng, 0)
    _, tb, vb = task.step_batches(k, task.train_stream.batch(0, 0), task.val_stream.batch(0, 0),
                                  task.schedule_values(0))
    sec = task.method_config
    ctx = lambda reg: task.context(key=k, arch_train_batch=tb, arch_batch=vb).replace(
        config=config_lib.base("drnas").drnas.copy_and_resolve_references() if reg == "l2" else _kl(sec))
    g_l2, g_kl = jax.jit(lambda st: (drnas.arch_grad(ctx("l2"), st), drnas.arch_grad(ctx("kl"), st)))(state)
    # the KL gradient by central differences of scipy's entropy, coordinate by coordinate
    space, h = task.space, 1e-5

    def kl_ref(alpha):
        tot = 0.0
        for t in space.cell_types:
            for row in np.asarray(drnas.concentration(alpha[t]), np.float64):
                tot += -scipy.stats.dirichlet(row).entropy() - math.lgamma(len(row))
        return tot

    a = jax.tree.map(lambda x: np.asarray(x, np.float64), state.alpha)
    for t, (i, j) in (("normal", (0, 1)), ("reduce", (3, 0)), ("normal", (len(space.edges) - 1, 1))):
        plus, minus = jax.tree.map(np.copy, a), jax.tree.map(np.copy, a)
        plus[t][i, j] += h
        minus[t][i, j] -= h
        fd = (kl_ref(plus) - kl_ref(minus)) / (2 * h)
        added = (g_kl.grad[t][i, j] - g_l2.grad[t][i, j]) / sec.reg_scale
        np.testing.assert_allclose(added, fd, rtol=1e-4, atol=1e-7)
    assert float(g_kl.metrics["drnas_kl"]) == pytest.approx(kl_ref(a), rel=1e-6)
    with pytest.raises(config_lib.ConfigError, match="config.drnas.reg_type='kl' replaces Adam's weight decay"):
        config_lib.validate(tiny_config("drnas", **{"drnas.reg_type": "kl"}))


def _kl(section):
    c = section.as_configdict()  # the task's section is part of its frozen step spec
    c.reg_type = "kl"
    return c


# ------------------------------------------------------------------ configs / CLI
@pytest.mark.parametrize("name,variant,facts", [
    ("pcdarts", "", dict(partial_channels=4, batch_size=256, epochs=50, arch_start_epoch=15, lr=0.1, lr_min=0.0,
                         arch_lr=6e-4, arch_weight_decay=1e-3, space="darts", cutout=0, augment_val=True)),
    ("drnas", "", dict(partial_channels=4, batch_size=64, epochs=50, arch_start_epoch=10, lr=0.1, lr_min=0.0,
                       arch_lr=6e-4, arch_weight_decay=1e-3, space="darts_no_none", C=36, layers=20)),
    ("drnas", "nb201", dict(partial_channels=1, epochs=100, arch_start_epoch=0, lr=0.025, lr_min=0.001,
                            arch_lr=3e-4, arch_weight_decay=1e-3, space="nb201", C=16, layers=5)),
    ("drnas", "kl", dict(arch_weight_decay=0.0, reg_type="kl", reg_scale=1e-3)),
])
def test_configs_follow_the_reference_code(name, variant, facts):
    c = config_lib.load_file(f"configs/{name}.py", variant)
    got = dict(partial_channels=c.model.partial_channels, batch_size=c.batch_size, epochs=c.epochs,
               arch_start_epoch=c.arch_start_epoch, lr=c.optim.lr, lr_min=c.optim.lr_min, arch_lr=c.optim.arch_lr,
               arch_weight_decay=c.optim.arch_weight_decay, space=c.space, cutout=c.data.cutout,
               augment_val=c.data.augment_val, C=c.model.C, layers=c.model.layers,
               estimator=c.estimator, **(c.drnas.to_dict() if name == "drnas" else {}))
    assert {k: got[k] for k in facts} == facts and c.estimator == "first_order"
    assert c.optim.arch_betas == (0.5, 0.999) and c.optim.weight_decay == 3e-4 and c.optim.grad_clip == 5.0


def _cli(tmp_path, *args):
    # os.environ carries conftest's JAX_DISABLE_MOST_OPTIMIZATIONS: compile time, not XLA's passes
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, os.path.join(REPO, "bin", "search.py"), *args,
                           "--compilation_cache", TEST_CACHE],
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=600, env=env)


TINY = ["--config.data.image_size=8", "--config.data.max_examples=256", "--config.model.C=4",
        "--config.model.layers=3", "--config.model.depthwise=conv", "--config.batch_size=8", "--config.epochs=2",
        "--config.steps_per_epoch=2", "--config.eval_batches=2", "--config.arch_start_epoch=1",
        "--config.tensorboard=False", "--config.model.partial_channels=2"]


@pytest.mark.parametrize("config", ["pcdarts.py:quick", "drnas.py:nb201,quick"])
def test_cli_runs_from_another_directory_and_resumes_bit_identically(tmp_path, config):
    """``bin/search.py --config configs/<x>.py`` from a directory without configs/ (the
    shipped config files), at the tiny size: one run straight, one stopped after an epoch
    and resumed; same metrics (timings aside) and genotype."""
    tiny = [a for a in TINY if "partial_channels" not in a or "nb201" not in config]
    if "nb201" in config:
        tiny = [a if a != "--config.model.layers=3" else "--config.model.layers=1" for a in tiny]
    else:  # the 2-op, 2-node space of the other tiny tests
        tiny.append("--config.space=tiny")
    full = _cli(tmp_path, "--config", f"configs/{config}", "--workdir", str(tmp_path / "full"), *tiny)
    assert full.returncode == 0, full.stderr[-2000:]
    part = _cli(tmp_path, "--config", f"configs/{config}", "--workdir", str(tmp_path / "part"), *tiny,
                "--max_epochs=1")
    assert part.returncode == 0 and "stopped after 1 of 2 epochs" in part.stdout, part.stderr[-2000:]
    rest = _cli(tmp_path, "--config", f"configs/{config}", "--workdir", str(tmp_path / "part"), *tiny)
    assert rest.returncode == 0 and "resumed" in rest.stdout + rest.stderr, rest.stderr[-2000:]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("train_time", "steps_per_sec")} for r in rows]
    mf, mp = (io_lib.read_jsonl(str(tmp_path / d / "metrics.jsonl")) for d in ("full", "part"))
    assert strip(mf) == strip(mp) and len(mf) == 2 and mf[1]["g1_norm"] > 0
    assert io_lib.read_json(str(tmp_path / "full" / "genotype.json")) == \
        io_lib.read_json(str(tmp_path / "part" / "genotype.json"))
    if "nb201" in config:
        assert "nb201_str" in io_lib.read_json(str(tmp_path / "full" / "genotype.json"))


def test_drnas_forwards_sample_their_weights_from_the_batch_key():
    """The engine's DrNAS forwards draw a Dirichlet sample from each batch's key: other keys
    give other weights and logits, many draws average to the Dirichlet mean, the weight step
    and the architecture step draw different samples, and evaluation draws a fresh sample per
    batch (the same keys every epoch). Each fails if a key stopped reaching the sampler."""
    task = search.SearchTask.from_config(tiny_config("drnas", arch_start_epoch=0))
    state = task.init_state()
    alpha = jax.tree.map(lambda a: a * 500.0, state.alpha)  # concentrations away from 1
    draws = jax.jit(jax.vmap(lambda k: task.mixing_weights(alpha, k)["normal"]))(
        jax.random.split(jax.random.key(5), 20000))
    assert not np.allclose(draws[0], draws[1])
    beta = np.asarray(drnas.concentration(alpha["normal"]), np.float64)
    np.testing.assert_allclose(np.asarray(draws, np.float64).mean(0), beta / beta.sum(-1, keepdims=True), atol=6e-3)
    k = search.fold_key(state.rng, 0)
    tb, _, vb = task.step_batches(k, task.train_stream.batch(0, 0), task.val_stream.batch(0, 0),
                                  task.schedule_values(0))
    fwd = jax.jit(lambda rng: task.apply(state.params, state.batch_stats, alpha, {**tb, "rng": rng}, train=False)[0])
    assert not np.allclose(fwd(tb["rng"]), fwd(vb["rng"]))  # weight step vs architecture step
    np.testing.assert_array_equal(fwd(tb["rng"]), fwd(tb["rng"]))
    # evaluation: every batch its own key, the same keys in every evaluation
    seen = []

    def spy(st, batch, a=None, normalized=False, key=None):
        seen.append(None if key is None else np.asarray(jax.random.key_data(key)).tolist())
        return jnp.float32(0.0), jnp.float32(0.0)

    import tempfile
    with tempfile.TemporaryDirectory() as d:
        runner = search.Runner(task, d, log=lambda *_: None)
        runner.restore_or_init()
        runner._compiled = (None, spy)
        runner.evaluate()
        runner.evaluate()
    n = len(seen) // 2
    assert n >= 2 and None not in seen and len({str(s) for s in seen[:n]}) == n and seen[:n] == seen[n:]


def test_pcdarts_betas_receive_a_gradient_and_move_at_k2():
    """At K=2 the architecture step moves the per-edge betas (edge normalisation) as well as
    alpha: a nonzero gradient, and new values after two epochs."""
    cfg = tiny_config("pcdarts", epochs=2, arch_start_epoch=0, **{"model.partial_channels": 2})
    task = search.SearchTask.from_config(cfg)
    state = task.init_state()
    k = search.fold_key(state.rng, 0)
    tb, atb, vb = task.step_batches(k, task.train_stream.batch(0, 0), task.val_stream.batch(0, 0),
                                    task.schedule_values(0))
    g = jax.jit(jax.grad(lambda a: task.val_loss_and_stats(state.params, state.batch_stats, a, vb)[0]))(state.alpha)
    assert all(np.abs(np.asarray(g["betas"][t])).max() > 0 for t in ("normal", "reduce"))
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        runner = search.Runner(task, d, log=lambda *_: None)
        runner.restore_or_init()
        b0 = jax.device_get(runner.state.alpha["betas"])
        runner.run()
        b1 = jax.device_get(runner.state.alpha["betas"])
    assert all(not np.allclose(b0[t], b1[t]) for t in ("normal", "reduce"))
