"""Test setup: 8 simulated CPU devices (set before JAX starts) and a persistent
compilation cache shared by the test processes (the supernet compiles slowly on XLA:CPU).
Inside each process, tasks of the same signature share their traced and compiled programs
(:mod:`jaxdarts.jit_cache`), so tests use the tiny shapes of :func:`tiny_config`."""

import contextlib
import os
import tempfile

import jax

jax.config.update("jax_num_cpu_devices", 8)
_cache = os.environ.get("JAXDARTS_TEST_CACHE", os.path.join(tempfile.gettempdir(), "jaxdarts_test_jax_cache"))
jax.config.update("jax_compilation_cache_dir", _cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")  # subprocesses: see _fast_compiles_unless_optimized

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _release_programs_near_the_mapping_limit():
    """After each test: release the shared programs and JAX's caches when the process holds
    half the memory mappings Linux allows (live XLA:CPU executables; past the limit the
    compiler crashes)."""
    yield
    from jaxdarts import jit_cache

    jit_cache.release_if_needed()


HEAVY_FIRST = ("test_supernet.py", "test_methods.py", "test_compare.py", "test_rdarts.py", "test_proxies.py",
               "test_readme.py")
"""Test files with the longest compiles, run first: the two xdist workers then finish
together instead of one of them compiling supernets alone at the end."""


SAME_PROGRAMS = ("test_method_tiny_search_runs_and_resumes_bit_identically",
                 "test_search_step_data_parallel_equals_one_device")
"""Tests parametrised by a method ``name`` that compile the same programs (``_tiny(name)`` of
test_methods): run in one xdist worker (``--dist loadgroup``), where the second gets the
first's traced and compiled step from :mod:`jaxdarts.jit_cache` instead of compiling it
again at the same time in the other worker."""


def pytest_collection_modifyitems(session, config, items):
    order = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: order.get(item.path.name, len(order)))  # stable: file order otherwise
    for item in items:
        if getattr(item, "originalname", None) in SAME_PROGRAMS and hasattr(item, "callspec"):
            item.add_marker(pytest.mark.xdist_group(f"programs-{item.callspec.params['name']}"))


OPTIMIZED_FILES = ("test_kernels.py", "test_ops.py")
"""Test files of the XLA:CPU lowerings (:mod:`jaxdarts.kernels`, the 'taps' ops): compiled
with XLA's optimisation passes, as a search compiles them. Elsewhere a test is marked
``@pytest.mark.xla_optimized``."""


@pytest.fixture(autouse=True)
def _fast_compiles_unless_optimized(request):
    """Every test compiles without most of XLA's optimisation passes (:func:`fast_compiles`;
    compile time is most of the suite's time) except the lowering tests, which compile as a
    search does (:data:`OPTIMIZED_FILES`, ``@pytest.mark.xla_optimized``). Subprocesses
    inherit the choice through ``JAX_DISABLE_MOST_OPTIMIZATIONS``."""
    if request.node.get_closest_marker("xla_optimized") or request.node.path.name in OPTIMIZED_FILES:
        yield
        return
    with fast_compiles():
        yield


@contextlib.contextmanager
def fast_compiles():
    """XLA without most of its optimisation passes (~40% less compile time for the tiny
    supernet): for tests of the search loop and of module structure, and for reference
    computations, never for what tests the XLA:CPU lowerings (jaxdarts.kernels, the 'taps'
    lowering, rematerialisation)."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture
def x64():
    """Runs a test with float64 enabled (independent numerical references)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def repo_root():
    return REPO


def tiny_config(method="darts", **overrides):
    """A search config of ``method`` that compiles and runs in seconds (8px, C=4, the 2-op
    2-node space ``tiny``); ``overrides`` may use dotted names (``**{"robustdarts.sweep.target": ...}``)."""
    from jaxdarts import config as config_lib

    c = config_lib.base(method)
    c.dataset = "fashion_mnist"
    c.space = "tiny"
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
