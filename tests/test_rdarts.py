"""RobustDARTS on the engine: DARTS-ES / DARTS-ADA through hook events, R-DARTS sweeps
(batched vs sequential, resume after a kill, --max_epochs, resumable selection)."""

import functools
import json
import os

import chex
import jax
import numpy as np
import pytest

from conftest import tiny_config
from jaxdarts import config as config_lib
from jaxdarts import io as io_lib
from jaxdarts import retrain, search



class InjectEigenvalues(search.Hook):
    """Replaces the measured eigenvalue by a synthetic curve (keeps the real one)."""

    name = "inject"

    def __init__(self, curve):
        self.curve = curve
        self.states = {}

    def after_epoch(self, runner, epoch, metrics):
        metrics["eigenvalue_measured"] = metrics["eigenvalue"]
        metrics["eigenvalue"] = self.curve(epoch, runner.reg["weight_decay"])
        self.states.setdefault(epoch, jax.device_get(runner.state))


@functools.lru_cache(maxsize=1)
def _es_task():
    """One task for the ES/ADA runners (they share its compiled step, evaluation and Hessian)."""
    cfg = tiny_config("robustdarts", epochs=6, hessian_every=1)
    cfg.robustdarts.early_stopping.update(dict(mode="code", window=1, delta=1, factor=1.5, start_epoch=0))
    return search.SearchTask.from_config(cfg)


def _runner(tmp_path, curve, **es):
    task = _es_task()
    cfg = task.cfg.copy_and_resolve_references()  # the hooks' parameters (not the task's)
    cfg.robustdarts.early_stopping.update(es)
    hooks = search.default_hooks(cfg)
    assert [h.name for h in hooks] == ["hessian", "early_stopping", "tensorboard"]
    inject = InjectEigenvalues(curve)
    hooks.insert(1, inject)  # after the Hessian hook, before early stopping
    return search.Runner(task, str(tmp_path), hooks, log=lambda *_: None), inject


@pytest.mark.slow
def test_darts_es_stops_and_returns_earlier_architecture(tmp_path):
    runner, _ = _runner(tmp_path, lambda e, wd: 1.0 if e < 3 else 10.0)
    out = runner.run()
    assert out["epochs_run"] == 4 and "early stopping at epoch 3" in out["stop_reason"]
    m = io_lib.read_jsonl(os.path.join(tmp_path, "metrics.jsonl"))
    assert all(np.isfinite(d["eigenvalue_measured"]) and d["hessian_time"] > 0 for d in m)
    assert m[3]["es_trigger"] == {"stop_epoch": 3, "return_epoch": 2}
    assert out["genotype"] == m[2]["genotype"]
    with open(os.path.join(tmp_path, "genotype.json")) as f:
        assert json.load(f)["genotype"] == m[2]["genotype"]


@pytest.mark.slow
def test_darts_ada_rolls_back_raises_regularisation_then_ignores_triggers_at_the_maximum(tmp_path):
    """DARTS-ADA: the eigenvalue jumps at epoch 3 whatever the weight decay. The first trigger
    rolls back to epoch 2 (bit-identical restore) and raises weight decay 3e-4 -> 3e-3 (the
    maximum here); the second would pass the maximum and is ignored (Algorithm 1 / the
    code's final_iteration): the search runs to its budget and returns the last
    architecture. A run killed before the trigger resumes with no in-memory snapshots and
    rolls back to the checkpoint of epoch 2, ending equal to the uninterrupted run."""
    curve = lambda e, wd: 10.0 if e >= 3 else 1.0
    ada = dict(ada=True, ada_factor=10.0, ada_max=3e-3)
    runner, inject = _runner(tmp_path / "full", curve, **ada)
    seen = []
    orig = runner.rollback

    def spy(to_epoch):
        orig(to_epoch)
        seen.append((to_epoch, jax.device_get(runner.state)))

    runner.rollback = spy
    out = runner.run()
    assert len(seen) == 1 and seen[0][0] == 2
    chex.assert_trees_all_equal(seen[0][1], inject.states[2])  # bit-identical restore of epoch 2
    assert runner.reg["weight_decay"] == pytest.approx(3e-3)
    assert float(runner.state.w_opt.hyperparams["weight_decay"]) == pytest.approx(3e-3)
    (hook,) = [h for h in runner.hooks if h.name == "early_stopping"]
    assert [(t["stop_epoch"], t["return_epoch"], t.get("ignored", False)) for t in hook.triggers] == \
        [(3, 2, False), (3, 2, True)]
    assert out["epochs_run"] == 6 and out["stop_reason"] is None
    m = io_lib.read_jsonl(os.path.join(tmp_path / "full", "metrics.jsonl"))
    assert [d["epoch"] for d in m] == [0, 1, 2, 3, 4, 5]  # epoch 3 rewritten after the rollback
    assert m[3]["weight_decay"] == pytest.approx(3e-3)
    assert m[3]["es_trigger"] == {"stop_epoch": 3, "return_epoch": 2, "ignored": True}
    assert out["genotype"] == out["last_genotype"] == m[5]["genotype"]

    part, _ = _runner(tmp_path / "part", curve, **ada)
    part.run(max_epochs=3)
    resumed, _ = _runner(tmp_path / "part", curve, **ada)
    assert resumed.run() == out and min(resumed.snapshots) > 2  # epoch 2 came from its checkpoint
    chex.assert_trees_all_equal(jax.device_get(resumed.state), jax.device_get(runner.state))


def test_hook_events_are_all_applied_or_conflict():
    S, R, H = search.Stop, search.Rollback, search.SetHyperparam
    stop, rb, sets = search.merge_events([("a", R(2)), ("a", H("weight_decay", 1e-3)), ("b", H("drop_path", 0.2)),
                                          ("c", R(2))])
    assert stop is None and rb == R(2) and sets == {"weight_decay": 1e-3, "drop_path": 0.2}
    assert search.merge_events([("a", S("x")), ("b", S("x"))])[0] == S("x")
    for events, match in [([("a", S("x")), ("b", S("y"))], r"hooks \['a', 'b'\] ask to stop"),
                          ([("a", R(1)), ("b", R(2))], "roll back to different epochs"),
                          ([("a", S("x")), ("b", R(1))], r"\['a'\] ask to stop while \['b'\] ask to roll back"),
                          ([("a", H("weight_decay", 1.0)), ("b", H("weight_decay", 2.0))], "different values"),
                          ([("a", H("lr", 1.0))], "unknown hyperparameter 'lr'"),
                          ([("a", ("stop", "x"))], "not an event")]:
        with pytest.raises(search.HookConflictError, match=match):
            search.merge_events(events)


def test_two_hooks_acting_in_one_epoch_both_apply(tmp_path):
    """A rollback from one hook and a hyperparameter from another in the same epoch."""

    class Once(search.Hook):
        def __init__(self, name, events):
            self.name, self.events = name, events

        def after_epoch(self, runner, epoch, metrics):
            if epoch == 1 and runner.reg["drop_path"] == 0.0:
                return self.events

    cfg = tiny_config(epochs=3)
    hooks = [Once("rb", [search.Rollback(0)]), Once("dp", [search.SetHyperparam("drop_path", 0.25)])]
    runner = search.Runner(search.SearchTask.from_config(cfg), str(tmp_path), hooks, log=lambda *_: None)
    runner.run()
    m = io_lib.read_jsonl(os.path.join(tmp_path, "metrics.jsonl"))
    assert [d["epoch"] for d in m] == [0, 1, 2] and runner.reg["drop_path"] == 0.25
    assert m[1]["drop_prob"] == pytest.approx(0.25 * 1 / 2)  # epoch 1 re-run with the new ramp maximum


@pytest.mark.slow
def test_sweep_batched_equals_sequential_and_differs_per_value(tmp_path):
    # One epoch at a constant drop-path (no ramp: a host-side schedule, same program as the
    # other tiny searches). The vmapped and sequential programs agree step by step to float
    # rounding; over many steps, drop-path on whole mixed-op outputs of an 8-sample batch
    # amplifies rounding (an edge dropped for the whole batch gives alpha a gradient of
    # rounding noise that Adam scales to an lr-sized step), so the comparison stays short.
    cfg = tiny_config(**{"regularization.ramp": False})
    task = search.SearchTask.from_config(cfg)
    values = (0.0, 0.5)
    outs, states = {}, {}
    for mode in ("batched", "sequential"):
        r = search.Runner(task, str(tmp_path / mode), log=lambda *_: None,
                          sweep=search.Sweep("drop_path", values, mode))
        outs[mode] = r.run(max_epochs=1)
        states[mode] = jax.device_get(r.state)
    assert outs["batched"]["genotypes"] == outs["sequential"]["genotypes"]
    chex.assert_trees_all_close(states["batched"].alpha, states["sequential"].alpha, rtol=1e-5, atol=1e-7)
    # each run of the batched sweep equals a single search with that value
    single = search.Runner(task, str(tmp_path / "single"), log=lambda *_: None)
    single.restore_or_init()
    single.reg["drop_path"] = 0.5
    single.run(max_epochs=1)
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[1], states["batched"].alpha), single.state.alpha,
                                rtol=1e-5, atol=1e-7)
    assert not np.allclose(states["batched"].alpha["normal"][0], states["batched"].alpha["normal"][1])
    m = io_lib.read_jsonl(str(tmp_path / "batched" / "metrics.jsonl"))
    assert len(m[0]["train_loss"]) == 2 and m[0]["drop_prob"] == [0.0, 0.5]  # no ramp
    with pytest.raises(ValueError, match="unknown sweep target 'l1'; accepted: drop_path, weight_decay, seed, or <method>"):
        search.Sweep("l1", values)


def _rdarts_cfg():
    cfg = tiny_config("robustdarts", epochs=3)
    cfg.robustdarts.sweep.update(dict(target="weight_decay", grid=(3e-4, 2.7e-3)))
    cfg.robustdarts.select.update(dict(epochs=1, C=4, layers=3))
    return cfg


@pytest.mark.slow
def test_rdarts_selects_by_retraining_and_resumes_after_kills(tmp_path, monkeypatch):
    """--max_epochs, a kill between epochs and a kill inside the selection: the re-run
    command ends with the uninterrupted run's result and metrics."""
    cfg = _rdarts_cfg()
    full = str(tmp_path / "full")
    out = search.run(cfg, full, log=lambda *_: None)
    saved = io_lib.read_json(os.path.join(full, "rdarts.json"))
    assert saved == json.loads(json.dumps(out))
    accs = [r["selection_acc"] for r in out["runs"]]
    assert all(0.0 <= a <= 1.0 for a in accs) and len(accs) == 2
    best = int(np.argmax(accs))
    assert out["chosen_value"] == cfg.robustdarts.sweep.grid[best] and out["genotype"] == out["runs"][best]["genotype"]
    assert io_lib.read_json(os.path.join(full, "genotype.json"))["genotype"] == out["genotype"]

    part = str(tmp_path / "part")
    # --max_epochs 1: one sweep epoch, no selection yet
    first = search.run(cfg, part, log=lambda *_: None, max_epochs=1)
    assert first["finished"] is False and first["epochs_run"] == 1
    assert not os.path.exists(os.path.join(part, "rdarts.json"))

    # killed between epochs, right after the epoch-2 checkpoint
    real_save = search.Runner.save

    def save_then_die(self, epochs_done):
        real_save(self, epochs_done)
        if epochs_done == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(search.Runner, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        search.run(cfg, part, log=lambda *_: None)
    monkeypatch.setattr(search.Runner, "save", real_save)
    assert [r["epoch"] for r in io_lib.read_jsonl(os.path.join(part, "metrics.jsonl"))] == [0, 1]

    # killed during the selection, after the first candidate's score is written
    calls = []
    real = retrain.train_and_evaluate

    def dies_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(retrain, "train_and_evaluate", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        search.run(cfg, part, log=lambda *_: None)
    assert len(io_lib.read_json(os.path.join(part, "selection.json"))["scores"]) == 1
    monkeypatch.setattr(retrain, "train_and_evaluate", real)
    logs = []
    resumed = search.run(cfg, part, log=logs.append)
    assert any("resumed" in l and "at epoch 3" in l for l in logs)  # the search had finished
    assert sum("retraining candidate" in l for l in logs) == 1
    assert resumed == out
    mf, mp = (io_lib.read_jsonl(os.path.join(d, "metrics.jsonl")) for d in (full, part))
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("train_time", "steps_per_sec")} for r in rows]
    assert strip(mf) == strip(mp)


def test_rdarts_refuses_hooks_inside_the_sweep():
    from test_search import _config_module

    with pytest.raises(config_lib.ConfigError, match="sweep.target='drop_path' .R-DARTS. runs one vmapped sweep"):
        config_lib.validate(_config_module("rdarts").get_config("es,dp"))  # was: ES silently dropped
    cfg = _rdarts_cfg()
    cfg.hessian_every = 2
    with pytest.raises(config_lib.ConfigError, match="runs one vmapped sweep without per-epoch hooks"):
        config_lib.validate(cfg)
    cfg.hessian_every = 0
    cfg.robustdarts.sweep.target = "none"
    cfg.robustdarts.early_stopping.mode = "code"
    with pytest.raises(config_lib.ConfigError, match="needs config.hessian_every > 0"):
        config_lib.validate(cfg)
    cfg = _rdarts_cfg()
    cfg.robustdarts.sweep.grid = (0.1, 1.5)
    cfg.robustdarts.sweep.target = "drop_path"
    with pytest.raises(config_lib.ConfigError, match=r"sweep.grid has 1.5; drop_path values must be in \[0, 1\)"):
        config_lib.validate(cfg)
