"""Programs built once per process (jaxdarts.jit_cache, SearchTask.signature/memo)."""

import collections

import jax
import pytest

from conftest import tiny_config
from jaxdarts import jit_cache, search



def _batches(task):
    return task.train_stream.batch(0, 0), task.val_stream.batch(0, 0), task.schedule_values(0)


def test_a_second_task_with_the_same_signature_reuses_the_traced_and_compiled_step():
    a = search.SearchTask.from_config(tiny_config())
    b = search.SearchTask.from_config(tiny_config(seed=11, log_every=3, checkpoint_keep=5, arch_start_epoch=1))
    assert a is not b and a.signature == b.signature
    step_a = a.memo(("step", False, ()), lambda: jax.jit(a.search_step))
    jax.block_until_ready(step_a(a.init_state(), *_batches(a)))
    before = jit_cache.stats()
    step_b = b.memo(("step", False, ()), lambda: pytest.fail("built again"))
    assert step_b is step_a
    jax.block_until_ready(step_b(b.init_state(), *_batches(b)))
    assert step_a._cache_size() == 1  # one trace and one executable for both tasks
    assert jit_cache.stats()["misses"] == before["misses"]


@pytest.mark.parametrize("field,value", [("optim.lr", 0.1), ("epochs", 4), ("model.C", 6), ("data.max_examples", 128),
                                         ("estimator", "unrolled"), ("model.depthwise", "taps")])
def test_fields_that_change_the_program_change_the_signature(field, value):
    base = search.SearchTask.from_config(tiny_config())
    other = search.SearchTask.from_config(tiny_config(**{field: value}))
    assert other.signature != base.signature


def _fields(cfg):
    from flax import traverse_util

    return set(traverse_util.flatten_dict(cfg.to_dict(), sep="."))


def _in_spec(field, spec_fields):
    return any(field == s or field.startswith(s + ".") for s in spec_fields)


def test_fields_outside_the_step_spec_do_not_change_the_lowered_step(monkeypatch):
    """Independent of the cache: the step traced from scratch (empty program cache) for a
    config that differs in every field outside the step spec lowers to the same StableHLO
    (the list below must name each such field: a new config field is placed consciously)."""
    changed = {"seed": 5, "num_seeds": 1, "log_every": 2, "progress": "bar", "checkpoint_keep": 7,
               "snapshot_window": 3, "tensorboard": False, "tensorboard_images_every": 2, "eval_batches": 1,
               "eval_batch_size": 16, "data.data_dir": "/nowhere", "discretization_gap": True,
               "hessian_every": 2, "diagnose": True, "arch_start_epoch": 2, "mesh.num_devices": 2, "donate": False}
    outside = {f for f in _fields(tiny_config()) if not _in_spec(f, search.STEP_FIELDS)}
    assert set(changed) == outside
    texts = []
    for cfg in (tiny_config(), tiny_config(**changed)):
        monkeypatch.setattr(jit_cache, "_CACHE", collections.OrderedDict())
        task = search.SearchTask.from_config(cfg)
        state = jax.eval_shape(task.init_state)
        texts.append(jax.jit(task.search_step).lower(state, *_batches(task)).as_text())
    assert texts[0] == texts[1]


def test_trace_once_replays_one_jaxpr_under_grad_vmap_and_jit():
    import jax.numpy as jnp
    import numpy as np

    calls = []

    def f(w, x):
        calls.append(1)  # Python side effect: runs once per traced signature
        return jnp.tanh(x @ w["a"]) * w["b"], {"s": jnp.sum(x)}

    g = jit_cache.trace_once(f)
    w = {"a": jnp.arange(6.0).reshape(3, 2) / 7, "b": jnp.float32(1.5)}
    x = jnp.linspace(-1, 1, 12).reshape(4, 3)
    loss = lambda fn: (lambda w, x: jnp.sum(fn(w, x)[0] ** 2))
    np.testing.assert_array_equal(g(w, x)[0], f(w, x)[0])
    gw, gx = jax.grad(loss(g), argnums=(0, 1))(w, x)
    rw, rx = jax.grad(loss(f), argnums=(0, 1))(w, x)
    np.testing.assert_allclose(gx, rx, rtol=1e-6)
    np.testing.assert_allclose(gw["a"], rw["a"], rtol=1e-6)
    batched = jax.vmap(g, in_axes=(None, 0))(w, jnp.stack([x, 2 * x]))
    np.testing.assert_allclose(batched[0][1], f(w, 2 * x)[0], rtol=1e-6)
    jax.jit(jax.hessian(loss(g), argnums=1))(w, x)
    calls.clear()
    g(w, x), jax.grad(loss(g))(w, x), jax.jit(loss(g))(w, x)
    assert calls == [] and g.cache_size() == 1  # one jaxpr for every use at this signature
    g(w, x[:2])
    assert calls == [1] and g.cache_size() == 2  # a new shape traces again


def test_the_search_step_traces_the_supernet_once(monkeypatch):
    """The architecture and weight steps (and evaluation in training mode) replay one traced
    forward: the Flax module's Python runs once per step program."""
    from jaxdarts import supernet

    task = search.SearchTask.from_config(tiny_config(estimator="unrolled"))
    monkeypatch.setattr(jit_cache, "_CACHE", collections.OrderedDict())
    state = jax.eval_shape(task.init_state)
    runs = []
    orig = supernet.Supernet.__call__
    monkeypatch.setattr(supernet.Supernet, "__call__", lambda self, *a, **k: runs.append(1) or orig(self, *a, **k))
    jax.jit(task.search_step).trace(state, *_batches(task))
    assert len(runs) == 1  # the virtual step, the validation loss and the weight step included


@pytest.mark.parametrize("name", ["darts", "amended", "balenas", "drnas", "msdarts", "pcdarts", "robustdarts",
                                  "sdarts", "stacnas"])
def test_the_step_spec_holds_every_field_the_programs_read(name):
    """Key completeness: every method's init, search step and evaluation traced with a config
    and a step spec that record each field read. The programs read their fields from the
    spec (the immutable value the key is made of), and whatever they still read from the
    config is in the spec too (the engine's STEP_FIELDS or the method's own section), so a
    field that changes a program always changes its key. Fails if traced code starts reading
    a field outside the spec."""
    import dataclasses
    import tempfile

    from config_recorder import Recorder
    from test_methods import _tiny

    cfg = _tiny(name)
    cfg.arch_start_epoch = 0
    task = search.SearchTask.from_config(cfg)
    reads, spec_reads = set(), set()
    rt = dataclasses.replace(task, cfg=Recorder(cfg, reads))
    spec_fields = set(search.STEP_FIELDS) | {name}
    rt.__dict__["_spec"] = task.spec  # read once from the plain config, as a task does at its first program
    assert rt.signature == task.signature
    rt.__dict__["_spec"] = Recorder(task.spec, spec_reads)
    with tempfile.TemporaryDirectory() as d:
        runner = search.Runner(rt, d, log=lambda *_: None)
        state = jax.eval_shape(rt._init_state, jax.random.key(0))
        sched = rt.schedule_values(0)
        tb, vb = rt.train_stream.batch(0, 0), rt.val_stream.batch(0, 0)
        step, ev = runner._fns()
        reads.clear()
        spec_reads.clear()
        jit_cache.clear()
        jax.jit(rt._init_state).trace(jax.random.key(0))
        step.trace(state, tb, vb, sched)
        ev.trace(state, tb, None)
    assert {"optim.lr", "data.augment"} <= spec_reads, spec_reads  # the programs read the spec
    outside = sorted(f for f in reads if not _in_spec(f, spec_fields))
    assert not outside, f"traced code read fields outside the step spec: {outside}"
