"""MS-DARTS mean-shift and the SDARTS perturbations (jaxdarts.perturb) against NumPy
transcriptions of the reference code and analytic cases, and their wiring into the search
step (methods msdarts / sdarts)."""

import dataclasses
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from reference import clip_transcription, linf_pgd_transcription, mean_shift_transcription
from jaxdarts import io as io_lib
from jaxdarts import methods, perturb, search, supernet
from jaxdarts.methods import _simplex

E, K = 14, 4


def _mask():
    m = np.ones((E, K), bool)
    m[::3, -1] = False  # a ragged space: every third edge has 3 ops
    return {"normal": m, "reduce": np.ones((E, K), bool)}


def _center(seed=0, mask=None, dtype=np.float64):
    rng = np.random.default_rng(seed)
    mask = mask or {"normal": np.ones((E, K), bool), "reduce": np.ones((E, K), bool)}
    out = {}
    for t, m in mask.items():
        a = np.where(m, rng.normal(size=(E, K)), -np.inf)
        w = np.exp(a - a.max(-1, keepdims=True))
        out[t] = (w / w.sum(-1, keepdims=True)).astype(dtype)
    return out


def _quadratic(seed=1):
    """loss(w) = sum_t <v_t, w_t> + 0.5 <q_t, w_t^2>: a smooth loss with a closed-form gradient."""
    rng = np.random.default_rng(seed)
    v = {t: rng.normal(size=(E, K)) for t in ("normal", "reduce")}
    q = {t: rng.uniform(0.5, 2.0, size=(E, K)) for t in ("normal", "reduce")}
    loss = lambda w: sum(jnp.sum(v[t] * w[t] + 0.5 * q[t] * w[t] ** 2) for t in sorted(w))
    loss_np = lambda ws: float(sum(np.sum(v[t] * w + 0.5 * q[t] * w ** 2) for t, w in zip(("normal", "reduce"), ws)))
    grad_np = lambda ws: [v[t] + q[t] * w for t, w in zip(("normal", "reduce"), ws)]
    return loss, loss_np, grad_np


def _noise(seed, shape, mask=None):
    rng = np.random.default_rng(seed)
    mask = mask or {"normal": np.ones((E, K), bool), "reduce": np.ones((E, K), bool)}
    return {t: np.where(m, rng.uniform(-1, 1, size=shape + (E, K)), 0.0) for t, m in mask.items()}


def test_clip_simplex_is_the_reference_clip(x64):
    rng = np.random.default_rng(3)
    w = rng.normal(0.3, 0.6, size=(E, K))
    w[2] = -np.abs(w[2])  # a row that clamps to all zeros: 1 at its pre-clamp argmax
    w[5] = [1.7, 0.4, -0.2, 3.0]
    out = np.asarray(perturb.clip_simplex({"normal": jnp.asarray(w)})["normal"])
    np.testing.assert_allclose(out, clip_transcription(w), rtol=1e-12)
    assert out[2].tolist() == np.eye(K)[np.argmax(w[2])].tolist()
    # padded slots stay 0 and never win the argmax; the real slots are clipped as the reference would
    m = _mask()["normal"]
    w2 = np.where(m, w, 5.0)  # garbage in padded slots
    out = np.asarray(perturb.clip_simplex({"normal": jnp.asarray(w2)}, {"normal": m})["normal"])
    assert np.all(out[~m] == 0)
    for r in range(E):
        np.testing.assert_allclose(out[r][m[r]], clip_transcription(w[r][m[r]][None])[0], rtol=1e-12)


def test_mean_shift_is_the_reference_code_with_the_same_draws(x64):
    """T = 2 iterations of N = 3 samples, two tensors, the code's defaults (softmax of the
    losses, unclipped average, unclipped result) against a line-by-line transcription."""
    center, (loss, loss_np, _) = _center(0), _quadratic(1)
    noise = _noise(2, (2, 3))
    eps, h = 0.25, 1.0
    out, info = perturb.mean_shift({t: jnp.asarray(c) for t, c in center.items()}, loss, noise, epsilon=eps,
                                   bandwidth=h)
    types = ("normal", "reduce")
    draws = [[[eps * noise[t][i, n] for t in types] for n in range(3)] for i in range(2)]
    ref = mean_shift_transcription([center[t] for t in types], loss_np, draws, h)
    for t, r in zip(types, ref):
        np.testing.assert_allclose(np.asarray(out[t]), r, rtol=1e-10, atol=1e-12)
    assert info["losses"].shape == (2, 3) and info["weights"]["normal"].shape == (2, 3)
    # the result moved, is not on the simplex exactly (unclipped average), and clip_result projects it
    assert not np.allclose(np.asarray(out["normal"]), center["normal"])
    clipped, _ = perturb.mean_shift(center, loss, noise, epsilon=eps, bandwidth=h, clip_result=True)
    np.testing.assert_allclose(np.asarray(clipped["normal"]).sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(clipped["normal"]), clip_transcription(np.asarray(out["normal"])),
                               rtol=1e-12)


def test_mean_shift_analytic_cases(x64):
    mask = _mask()
    center, (loss, _, _) = _center(0, mask), _quadratic(1)
    eps = 0.3
    # N = 1: the (unclipped) sample, for any bandwidth and loss; T = 2 chains two samples
    for h in (0.05, 1.0, 100.0):
        n1 = _noise(4, (2, 1), mask)
        out, _ = perturb.mean_shift(center, loss, n1, epsilon=eps, bandwidth=h, mask=mask)
        for t in center:
            np.testing.assert_allclose(np.asarray(out[t]), center[t] + eps * (n1[t][0, 0] + n1[t][1, 0]),
                                       rtol=1e-10, atol=1e-12)
            assert np.all(np.asarray(out[t])[~mask[t]] == 0)
    # h -> infinity: the loss-weighted (softmax of the losses) mean of the unclipped samples
    nz = _noise(5, (1, 4), mask)
    x = {t: center[t][None] + eps * nz[t][0] for t in center}
    z = jax.vmap(lambda s: perturb.clip_simplex(s, mask))(x)
    L = np.array([float(loss(jax.tree.map(lambda a: a[n], z))) for n in range(4)])
    om = np.exp(L - L.max()) / np.exp(L - L.max()).sum()
    out, info = perturb.mean_shift(center, loss, nz, epsilon=eps, bandwidth=1e6, mask=mask)
    np.testing.assert_allclose(np.asarray(info["losses"][0]), L, rtol=1e-12)
    for t in center:
        np.testing.assert_allclose(np.asarray(out[t]), np.tensordot(om, x[t], axes=1), rtol=1e-9)
    # proportional weights (the paper) with h -> infinity: sum_n L_n x_n / sum L (a positive loss)
    pos = lambda w: loss(w) + 100.0
    out, _ = perturb.mean_shift(center, pos, nz, epsilon=eps, bandwidth=1e6, mask=mask, omega="proportional")
    for t in center:
        np.testing.assert_allclose(np.asarray(out[t]), np.tensordot((L + 100) / (L + 100).sum(), x[t], axes=1),
                                   rtol=1e-9)
    # uniform weights (a huge temperature) and a huge bandwidth: the plain sample mean (clipped samples too)
    for average, pts in (("unclipped", x), ("clipped", z)):
        out, _ = perturb.mean_shift(center, loss, nz, epsilon=eps, bandwidth=1e6, mask=mask, temperature=1e9,
                                    average=average)
        for t in center:
            np.testing.assert_allclose(np.asarray(out[t]), np.mean(np.asarray(pts[t]), 0), rtol=1e-7, atol=1e-10)


def test_log_space_weights_equal_the_direct_ratio_and_survive_its_underflow():
    """Both branches against the transcription of the reference code (which forms the
    kernel ratio directly), then the float32 underflow only the log-space branch survives."""
    types = ("normal", "reduce")
    with jax.enable_x64(True):
        center64, (loss64, loss_np, _) = _center(0), _quadratic(1)
        noise64 = _noise(6, (2, 3))
        draws = [[[0.25 * noise64[t][i, n] for t in types] for n in range(3)] for i in range(2)]
        ref = mean_shift_transcription([center64[t] for t in types], loss_np, draws, 0.5)
        for log_space in (True, False):
            out, _ = perturb.mean_shift(center64, loss64, noise64, epsilon=0.25, bandwidth=0.5, log_space=log_space)
            for t, r in zip(types, ref):
                np.testing.assert_allclose(np.asarray(out[t]), r, rtol=1e-10, atol=1e-12)
    center, (loss, _, _) = _center(0, dtype=np.float32), _quadratic(1)
    noise = {t: v.astype(np.float32) for t, v in _noise(6, (2, 3)).items()}
    kw = dict(epsilon=0.25)
    # h = 0.02: ||c - z||^2 / 2h^2 ~ 1e3, exp underflows in float32: the direct ratio is 0/0
    b, _ = perturb.mean_shift(center, loss, noise, bandwidth=0.02, log_space=False, **kw)
    assert np.isnan(np.asarray(b["normal"])).all()
    a, info = perturb.mean_shift(center, loss, noise, bandwidth=0.02, **kw)
    assert np.isfinite(np.asarray(a["normal"])).all()
    # and is (numerically) the sample nearest to the centre of each tensor in the last iteration
    w = np.asarray(info["weights"]["normal"][-1])
    assert w.max() > 0.999


def test_random_smoothing_and_pgd_are_the_sdarts_code(x64):
    mask = {"normal": np.ones((E, K), bool), "reduce": np.ones((E, K), bool)}
    center, (loss, loss_np, grad_np) = _center(7), _quadratic(8)
    noise, eps = _noise(9, ()), 0.3
    types = ("normal", "reduce")
    rs = perturb.random_smoothing(center, noise, epsilon=eps, mask=mask)
    for t in types:
        np.testing.assert_allclose(np.asarray(rs[t]), clip_transcription(center[t] + eps * noise[t]), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(rs[t]).sum(-1), 1.0, rtol=1e-12)
        assert np.all(np.asarray(rs[t]) >= 0)
    adv, info = perturb.pgd_attack(center, loss, noise, epsilon=eps, steps=7, mask=mask)
    ref = linf_pgd_transcription([center[t] for t in types], loss_np, grad_np,
                                 [eps * noise[t] for t in types], eps, steps=7)
    for t, r in zip(types, ref):
        np.testing.assert_allclose(np.asarray(adv[t]), r, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.asarray(adv[t]).sum(-1), 1.0, rtol=1e-12)
    assert not bool(info["reverted"]) and float(info["loss_adv"]) > float(info["loss_clean"])
    # a loss whose maximum is the centre: every attack lowers it, the clean weights come back
    peak = lambda w: -sum(jnp.sum((w[t] - center[t]) ** 2) for t in w)
    back, info = perturb.pgd_attack(center, peak, noise, epsilon=eps, steps=3, mask=mask)
    assert bool(info["reverted"])
    chex.assert_trees_all_equal(back, jax.tree.map(jnp.asarray, center))


def test_epsilon_schedules_are_the_codes():
    E_ = 40
    assert perturb.epsilon_schedule("ms", 0.25, 0, E_) == pytest.approx(0.025)
    assert perturb.epsilon_schedule("ms", 0.25, E_ - 1, E_) == pytest.approx(0.025 + 0.9 * 0.25 * 39 / 40)
    assert perturb.epsilon_schedule("sdarts", 0.3, 0, 50) == pytest.approx(0.03)
    assert perturb.epsilon_schedule("sdarts", 0.3, 25, 50) == pytest.approx(0.03 + 0.27 * 0.5)
    assert perturb.epsilon_schedule("const", 0.3, 25, 50) == 0.3
    with pytest.raises(ValueError, match=re.escape("eps_schedule='cos' is not accepted; accepted: ms, sdarts, const") + "$"):
        perturb.epsilon_schedule("cos", 0.3, 0, 5)


@pytest.mark.slow
def test_mean_shift_on_the_supernet_batched_equals_looped_and_feeds_the_weight_step():
    """On the tiny supernet (a ragged space, 3 cells): the N sample losses evaluated as one
    vmap equal a lax.map and the losses of each clipped sample computed one by one; the
    search step in the arch warm-up trains the weights at exactly the mean-shifted weights
    (not softmax(alpha)) and leaves alpha and its optimiser untouched."""
    cfg = tiny_config("msdarts", space="s3")
    task = search.SearchTask.from_config(cfg)
    s0 = task.init_state()
    s0 = s0.replace(alpha=jax.tree.map(lambda a: a * 300.0, s0.alpha))  # a non-uniform softmax
    sched = task.schedule_values(0)
    assert sched["arch_update"] == 0 and sched["ms_epsilon"] == pytest.approx(0.025)
    sched = {**sched, "ms_epsilon": np.float32(0.3)}
    tb_raw, vb_raw = task.train_stream.batch(0, 0), task.val_stream.batch(0, 0)

    @jax.jit
    def run(s0, tb_raw, vb_raw, sched):
        k = search.fold_key(s0.rng, s0.step)
        tb, _, vb = task.step_batches(k, tb_raw, vb_raw, sched)
        center, mk = _simplex.clean_weights(task, s0), _simplex.masks(task.space)
        loss = _simplex.loss_at_weights(task, s0, tb, "eval")
        noise = perturb.uniform_noise(jax.random.fold_in(k, 3), center, (2, 3), mk)
        kw = dict(epsilon=sched["ms_epsilon"], bandwidth=sched["ms_bandwidth"], mask=mk)
        wv, iv = perturb.mean_shift(center, loss, noise, **kw)
        wm, im = perturb.mean_shift(center, loss, noise, sample_eval="map", **kw)
        first = jax.vmap(lambda s: perturb.clip_simplex(s, mk))(
            jax.tree.map(lambda c, u: c[None] + kw["epsilon"] * u[0], center, noise))
        one_by_one = jnp.stack([loss(jax.tree.map(lambda a: a[n], first)) for n in range(3)])
        stepped, metrics = task.search_step(s0, tb_raw, vb_raw, sched)
        at_shift, _ = task.weight_update(s0, tb, weights=wv)
        at_softmax, _ = task.weight_update(s0, tb)
        return wv, iv, wm, im, one_by_one, stepped, metrics, at_shift, at_softmax

    wv, iv, wm, im, one_by_one, stepped, metrics, at_shift, at_softmax = jax.device_get(run(s0, tb_raw, vb_raw, sched))
    chex.assert_trees_all_close(wv, wm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(iv["losses"], im["losses"], rtol=1e-5)
    np.testing.assert_allclose(iv["losses"][0], one_by_one, rtol=1e-5)
    assert np.ptp(iv["losses"][0]) > 0  # the samples differ
    center = jax.device_get(_simplex.clean_weights(task, s0))
    assert metrics["ms_shift"] == pytest.approx(np.sqrt(sum(np.sum((wv[t] - center[t]) ** 2) for t in wv)), rel=1e-4)
    chex.assert_trees_all_equal(stepped.alpha, jax.device_get(s0.alpha))
    chex.assert_trees_all_equal(stepped.a_opt, jax.device_get(s0.a_opt))
    chex.assert_trees_all_close(stepped.params, at_shift.params, rtol=1e-5, atol=1e-6)
    assert not all(np.allclose(a, b, rtol=1e-4, atol=1e-6)
                   for a, b in zip(jax.tree.leaves(stepped.params), jax.tree.leaves(at_softmax.params)))


@pytest.mark.slow
def test_bandwidth_sweep_is_one_program_equal_to_single_searches(tmp_path):
    cfg = tiny_config("msdarts", epochs=2, steps_per_epoch=2)
    task = search.SearchTask.from_config(cfg)
    values = (0.01, 5.0)
    out = search.run_sweep(task, str(tmp_path / "sweep"), search.Sweep("msdarts.bandwidth", values),
                           log=lambda *_: None, max_epochs=1)
    runner = search.Runner(task, str(tmp_path / "sweep"), log=lambda *_: None,
                           sweep=search.Sweep("msdarts.bandwidth", values))
    runner.restore_or_init()
    m = io_lib.read_jsonl(str(tmp_path / "sweep" / "metrics.jsonl"))[0]
    assert m["ms_bandwidth"] == pytest.approx(list(values)) and not out["finished"]
    assert m["ms_shift"][0] != pytest.approx(m["ms_shift"][1])
    cfg1 = tiny_config("msdarts", epochs=2, steps_per_epoch=2, **{"msdarts.bandwidth": 5.0})
    single = search.Runner(search.SearchTask.from_config(cfg1), str(tmp_path / "single"), log=lambda *_: None)
    single.run(max_epochs=1)
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[1], runner.state.params), single.state.params,
                                rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=re.escape("unknown sweep target 'msdarts.num_samples' for method 'msdarts'; "
                                                   "accepted: drop_path, weight_decay, seed, msdarts.bandwidth, "
                                                   "msdarts.epsilon, msdarts.omega_temperature") + "$"):
        search.Runner(task, str(tmp_path / "bad"), sweep=search.Sweep("msdarts.num_samples", (2, 3)))


def test_msdarts_and_sdarts_configs_follow_their_code():
    """Settings read from the reference code (METHODS_SPEC 1.x, issue 27): MS-DARTS
    (train_search_ms.py) forces cutout 16 for S1-S4 and computes the eigenvalue every
    epoch; SmoothDARTS (train_search.py, spaces.py) searches the DARTS space without
    'none' and never turns cutout on; both give the architecture step training-transform
    batches."""
    import os

    from conftest import REPO
    from jaxdarts import config as config_lib
    from jaxdarts import ops, spaces

    load = lambda f, v: config_lib.load_file(os.path.join(REPO, "configs", f), v)
    for v in ("", "quick", "s1", "s3,quick", "cifar100"):
        c = load("msdarts.py", v)
        assert c.hessian_every == (0 if "quick" in v else 1) and c.data.augment_val
        assert c.data.cutout == (16 if v.startswith("s") else 0)
    for v in ("", "adv", "rs,quick", "s1", "s2,quick", "s4", "cifar100"):
        c = load("sdarts.py", v)
        assert c.data.cutout == 0 and not c.regularization.ramp_cutout and c.data.augment_val
        assert c.space == (v.split(",")[0] if v.startswith("s") else "darts_no_none")
    ops7 = spaces.get("darts_no_none").ops["normal"][0]
    assert set(ops7) == set(ops.PRIMITIVES) - {"none"} and len(ops7) == 7
    sp = spaces.get("darts_no_none")  # the supernet builds it: 7 mixing weights per edge
    v = jax.eval_shape(lambda: supernet.Supernet(sp, 10, C=4, layers=3).init(
        jax.random.key(0), jnp.zeros((2, 8, 8, 3)), supernet.init_alpha(sp, jax.random.key(1)), train=False))
    assert supernet.init_alpha(sp, jax.random.key(1))["normal"].shape == (14, 7) and "cell_0" in v["params"]
    assert config_lib.base().data.augment_val  # every method's reference does it


def test_s4_noise_is_fresh_for_other_mixing_weights_and_shared_for_equal_ones():
    """SmoothDARTS's NoiseOp draws new noise at every forward; here a forward at other mixing
    weights (an MS-DARTS sample, a PGD step, the weight step) draws other noise, one at the
    same weights the same noise, in separate calls and under vmap alike. With all weight on
    ``noise`` the logits are a function of the noise alone, so they show which noise was
    drawn. A space without ``noise`` keeps the batch's key (its programs are unchanged)."""
    cfg = tiny_config("msdarts", space="s4", **{"model.layers": 1})
    task = search.SearchTask.from_config(cfg)
    assert task.has_noise_op and not search.SearchTask.from_config(tiny_config()).has_noise_op
    state = task.init_state()
    b = task.preprocess(jax.random.key(0), task.train_stream.batch(0, 0), True)
    k = task.space.ops["normal"][0].index("noise")
    onehot = {t: jnp.zeros(s).at[..., k].set(1.0) for t, s in task.space.alpha_shapes().items()}
    near = jax.tree.map(lambda w: w * (1 - 1e-6) + 1e-6 * (1 - w), onehot)  # a hair away: the same function

    @jax.jit
    def logits(w):
        return task.apply(state.params, state.batch_stats, w, b, train=False, normalized=True)[0]

    l1, l1_again, l2 = logits(onehot), logits(onehot), logits(near)
    np.testing.assert_array_equal(l1, l1_again)
    assert np.max(np.abs(l1 - l2)) > 1e-2  # other noise, not a 1e-6 change of the mixing
    stacked = jax.tree.map(lambda a, c: jnp.stack([a, c]), onehot, near)
    both = jax.jit(jax.vmap(lambda w: task.apply(state.params, state.batch_stats, w, b, train=False,
                                                 normalized=True)[0]))(stacked)
    np.testing.assert_allclose(both[0], l1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(both[1], l2, rtol=1e-5, atol=1e-6)
