"""Test setup: 8 simulated CPU devices (set before JAX starts) and a persistent
compilation cache shared by the test processes (the supernet compiles slowly on XLA:CPU)."""

import os
import tempfile

import jax

jax.config.update("jax_num_cpu_devices", 8)
_cache = os.environ.get("JAXDARTS_TEST_CACHE", os.path.join(tempfile.gettempdir(), "jaxdarts_test_jax_cache"))
jax.config.update("jax_compilation_cache_dir", _cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def x64():
    """Runs a test with float64 enabled (independent numerical references)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def repo_root():
    return REPO


def tiny_config(**overrides):
    """A search config that compiles and runs in seconds (8px, C=4, 2-op space)."""
    from jaxdarts import config as config_lib

    c = config_lib.base()
    c.dataset = "fashion_mnist"
    c.space = "s2"
    c.data.image_size = 8
    c.data.max_examples = 256
    c.model.C = 4
    c.model.layers = 3
    c.model.depthwise = "conv"
    c.batch_size = 8
    c.epochs = 3
    c.steps_per_epoch = 2
    c.eval_batches = 2
    c.log_every = 1
    c.progress = "log"
    c.checkpoint_keep = 3
    for k, v in overrides.items():
        node = c
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return c
