"""DARTS-ES / DARTS-ADA in the search loop, and batched vs sequential R-DARTS."""

import json
import os

import jax
import numpy as np
import pytest

from conftest import tiny_config
from jaxdarts import rdarts, search


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


def _runner(tmp_path, curve, **es):
    cfg = tiny_config(epochs=6, hessian_every=1)
    cfg.early_stopping.update(dict(mode="code", window=1, delta=1, factor=1.5, start_epoch=0, **es))
    task = search.SearchTask.from_config(cfg)
    hooks = search.default_hooks(cfg)
    inject = InjectEigenvalues(curve)
    hooks.insert(1, inject)  # after the Hessian hook, before early stopping
    return search.Runner(task, str(tmp_path), hooks, log=lambda *_: None), inject


def test_darts_es_stops_and_returns_earlier_architecture(tmp_path):
    runner, _ = _runner(tmp_path, lambda e, wd: 1.0 if e < 3 else 10.0)
    out = runner.run()
    assert out["epochs_run"] == 4 and "early stopping at epoch 3" in out["stop_reason"]
    with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
        m = [json.loads(l) for l in f]
    assert all(np.isfinite(d["eigenvalue_measured"]) and d["hessian_time"] > 0 for d in m)
    assert m[3]["es_trigger"] == {"stop_epoch": 3, "return_epoch": 2}
    assert out["genotype"] == m[2]["genotype"]


def test_darts_ada_rolls_back_bit_identically_and_raises_regularisation(tmp_path):
    # eigenvalue jumps at epoch 3 while weight decay is at its initial value only
    runner, inject = _runner(tmp_path, lambda e, wd: 10.0 if (e >= 3 and wd < 1e-3) else 1.0,
                             ada=True, ada_factor=10.0, ada_max=3e-2)
    seen = []
    orig = runner.rollback

    def spy(to_epoch):
        orig(to_epoch)
        seen.append((to_epoch, jax.device_get(runner.state)))

    runner.rollback = spy
    out = runner.run()
    assert len(seen) == 1 and seen[0][0] == 2
    restored, snapshot = seen[0][1], inject.states[2]
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(snapshot)):
        np.testing.assert_array_equal(a, b)
    assert runner.reg["weight_decay"] == pytest.approx(3e-3)
    assert out["epochs_run"] == 6 and out["stop_reason"] is None
    with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
        m = [json.loads(l) for l in f]
    assert [d["epoch"] for d in m] == [0, 1, 2, 3, 4, 5]  # epoch 3 rewritten after the rollback
    assert m[3]["weight_decay"] == pytest.approx(3e-3) and "es_trigger" not in m[3]
    assert runner.extra["es_return_epoch"] == 2


def test_rdarts_batched_equals_sequential():
    cfg = tiny_config(epochs=2)
    task = search.SearchTask.from_config(cfg)
    values = [0.0, 0.5]
    sb, gb = rdarts.rdarts_search(task, values, "drop_path", "batched")
    ss, gs = rdarts.rdarts_search(task, values, "drop_path", "sequential")
    assert gb == gs
    for a, b in zip(jax.tree.leaves(sb.alpha), jax.tree.leaves(ss.alpha)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # the two regularisation values really gave different searches
    assert not np.allclose(sb.alpha["normal"][0], sb.alpha["normal"][1])
    with pytest.raises(ValueError, match="unknown R-DARTS target 'l1'"):
        rdarts.rdarts_search(task, values, "l1")


def test_rdarts_run_selects_by_retraining_and_writes_results(tmp_path):
    cfg = tiny_config(epochs=1, runner="rdarts")
    cfg.rdarts.update(dict(target="weight_decay", grid=(3e-4, 2.7e-3), select_epochs=1, select_C=4, select_layers=3))
    out = rdarts.run(cfg, str(tmp_path), log=lambda *_: None)
    with open(os.path.join(tmp_path, "rdarts.json")) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(out))
    accs = [r["selection_acc"] for r in out["runs"]]
    assert all(0.0 <= a <= 1.0 for a in accs) and len(accs) == 2
    best = int(np.argmax(accs))
    assert out["chosen_value"] == cfg.rdarts.grid[best] and out["genotype"] == out["runs"][best]["genotype"]
    with open(os.path.join(tmp_path, "genotype.json")) as f:
        assert json.load(f)["genotype"] == out["genotype"]
