"""Programs built once per process (jaxdarts.programs, SearchTask.signature/memo)."""

import jax
import pytest

from conftest import tiny_config
from jaxdarts import programs, search

pytestmark = pytest.mark.usefixtures("fast_compile")


def _batches(task):
    return task.train_stream.batch(0, 0), task.val_stream.batch(0, 0), task.schedule_values(0)


def test_a_second_task_with_the_same_signature_reuses_the_traced_and_compiled_step():
    a = search.SearchTask.from_config(tiny_config())
    b = search.SearchTask.from_config(tiny_config(seed=11, log_every=3, checkpoint_keep=5, arch_start_epoch=1))
    assert a is not b and a.signature == b.signature
    step_a = a.memo(("step", False, ()), lambda: jax.jit(a.search_step))
    jax.block_until_ready(step_a(a.init_state(), *_batches(a)))
    before = programs.stats()
    step_b = b.memo(("step", False, ()), lambda: pytest.fail("built again"))
    assert step_b is step_a
    jax.block_until_ready(step_b(b.init_state(), *_batches(b)))
    assert step_a._cache_size() == 1  # one trace and one executable for both tasks
    assert programs.stats()["misses"] == before["misses"]


@pytest.mark.parametrize("field,value", [("optim.lr", 0.1), ("epochs", 4), ("model.C", 6), ("data.max_examples", 128),
                                         ("estimator", "unrolled"), ("model.depthwise", "taps")])
def test_fields_that_change_the_program_change_the_signature(field, value):
    base = search.SearchTask.from_config(tiny_config())
    other = search.SearchTask.from_config(tiny_config(**{field: value}))
    assert other.signature != base.signature


def test_host_only_fields_do_not_change_the_lowered_step(monkeypatch):
    """Independent of the cache: the step traced from scratch (empty program cache) for a
    config that differs in every field of HOST_ONLY_FIELDS lowers to the same StableHLO."""
    changed = {"seed": 5, "num_seeds": 1, "log_every": 2, "progress": "bar", "checkpoint_keep": 7,
               "snapshot_window": 3, "tensorboard": False, "tensorboard_images_every": 2, "eval_batches": 1,
               "eval_batch_size": 16, "data.data_dir": "/nowhere", "discretization_gap": True,
               "hessian_every": 2, "diagnose": True, "arch_start_epoch": 2, "mesh.num_devices": 2}
    assert {f.split(".")[0] if f.startswith("mesh.") else f for f in changed} == set(search.HOST_ONLY_FIELDS)
    texts = []
    for cfg in (tiny_config(), tiny_config(**changed)):
        monkeypatch.setattr(programs, "_CACHE", {})
        task = search.SearchTask.from_config(cfg)
        state = jax.eval_shape(task.init_state)
        texts.append(jax.jit(task.search_step).lower(state, *_batches(task)).as_text())
    assert texts[0] == texts[1]
