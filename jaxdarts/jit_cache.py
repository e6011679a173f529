"""Programs built once per process: jitted functions shared by every object with the same
static signature.

Tracing the supernet (Flax module construction, ``nn.scan``/``nn.vmap`` over edge groups, automatic
differentiation of the result) costs seconds and compiling it tens of seconds, and every new
``jax.jit`` object traces again even when XLA's persistent cache would hit. So the engine
never builds a ``jax.jit`` per task: :meth:`jaxdarts.search.SearchTask.memo` asks this
module for the function under ``(signature, name)``, where the signature holds everything a
traced program reads (the config fields that change the program, data shapes and sizes,
normalisation, method, lowering; see :func:`jaxdarts.search.task_signature`). A second
task, a resumed run, a sweep member, a hook or a test with the same signature gets the same
jitted function, whose trace and executable JAX has already cached: no tracing, no lowering,
no compile.

The cache keeps the :data:`MAX_PROGRAMS` most recently used programs and releases all of
them when the process nears Linux's limit on memory mappings (:func:`release_if_needed`);
:func:`clear` empties it, :func:`stats` counts hits, misses and evictions. A jitted function
keeps the first object it was built from alive: its closure must read only what the
signature covers. :func:`trace_once` and :func:`compile_once` are the per-signature
tracing and ahead-of-time compilation the engine builds its programs from.
"""

from __future__ import annotations

import collections
import gc
import os
import threading
from typing import Any, Callable, Hashable

import jax

_CACHE: "collections.OrderedDict[Hashable, Any]" = collections.OrderedDict()
_LOCK = threading.Lock()
_STATS = {"hits": 0, "misses": 0, "evicted": 0}
MAX_PROGRAMS = int(os.environ.get("JAXDARTS_MAX_PROGRAMS", "32"))
"""Programs kept (least recently used first out). Every live XLA:CPU executable holds
memory mappings of its code, and a process may have at most ``vm.max_map_count`` (65,530 by
default) of them: a test process that kept every program of the suite alive reached that
and crashed inside XLA's compiler (2026-12-02). An evicted program is freed once nothing
else holds it and is built again if asked for."""


def memory_maps() -> tuple[int, int] | None:
    """``(mappings of this process, vm.max_map_count)`` on Linux, else None."""
    try:
        with open("/proc/self/maps", "rb") as f:
            n = sum(1 for _ in f)
        with open("/proc/sys/vm/max_map_count") as f:
            return n, int(f.read())
    except (OSError, ValueError):
        return None


def release_if_needed(fraction: float = 0.5) -> bool:
    """Drops every shared program and JAX's own compilation caches (``jax.clear_caches``)
    when this process holds more than ``fraction`` of the memory mappings Linux allows
    (each live XLA:CPU executable maps its code; past the limit XLA's compiler crashes).
    Programs are built again when next asked for. Returns whether it released anything."""
    m = memory_maps()
    if m is None or m[0] < fraction * m[1]:
        return False
    clear()
    jax.clear_caches()
    gc.collect()
    return True


def shared(key: Hashable, build: Callable[[], Any]) -> Any:
    """``build()`` once per process and ``key`` (hashable); later calls return the same object
    (while it is among the :data:`MAX_PROGRAMS` most recently used; everything is released
    first when the process nears its memory-mapping limit, :func:`release_if_needed`). The
    key includes whether float64 is enabled: a program traced under ``jax.enable_x64`` holds
    float64 constants that a float32 caller must not replay."""
    key = (key, bool(jax.config.read("jax_enable_x64")))
    with _LOCK:
        if key in _CACHE:
            _STATS["hits"] += 1
            _CACHE.move_to_end(key)
            return _CACHE[key]
    release_if_needed()
    value = build()
    with _LOCK:
        if key in _CACHE:  # built concurrently: keep the first, so callers share one object
            _STATS["hits"] += 1
            return _CACHE[key]
        _STATS["misses"] += 1
        _CACHE[key] = value
        while len(_CACHE) > max(MAX_PROGRAMS, 1):
            _CACHE.popitem(last=False)
            _STATS["evicted"] += 1
        return value


def stats() -> dict:
    """``{'hits', 'misses', 'evicted', 'size'}`` since the process started (or :func:`clear`)."""
    with _LOCK:
        return {**_STATS, "size": len(_CACHE)}


def clear() -> None:
    """Forgets every shared program (the next request builds, traces and compiles again)."""
    with _LOCK:
        _CACHE.clear()
        _STATS.update(hits=0, misses=0, evicted=0)


def input_signature(leaves) -> tuple:
    """``((shape, dtype, weak_type), ...)`` of arrays or tracers: what a trace depends on."""
    avals = [jax.typeof(x) for x in leaves]
    return tuple((a.shape, a.dtype, getattr(a, "weak_type", False)) for a in avals)


def trace_once(fn: Callable) -> Callable:
    """``fn`` traced once per input signature (pytree structure, shapes, dtypes, weak types)
    into a jaxpr that every later call replays in place (``jax.core.eval_jaxpr`` on the
    caller's values or tracers).

    For functions whose Python is the expensive part of tracing (a Flax supernet): the
    architecture step, the weight step, a virtual step, Hessian-vector products and
    ``vmap``-ed samples all differentiate or batch the replayed primitives instead of running
    the module's Python again. Unlike a nested ``jax.jit``, the replay leaves no call in the
    program: the lowered StableHLO has the primitives that tracing ``fn`` directly gives.
    ``fn`` must be pure and its Python must not depend on input values."""
    cache: dict = {}

    def replay(*args):
        leaves, tree = jax.tree.flatten(args)
        key = (tree, input_signature(leaves), bool(jax.config.read("jax_enable_x64")))
        if key not in cache:
            specs = [jax.ShapeDtypeStruct(shape, dtype, weak_type=weak) for shape, dtype, weak in key[1]]
            closed, out_shape = jax.make_jaxpr(lambda *xs: fn(*jax.tree.unflatten(tree, xs)),
                                               return_shape=True)(*specs)
            cache[key] = (closed, jax.tree.structure(out_shape))
        closed, out_tree = cache[key]
        return jax.tree.unflatten(out_tree, jax.core.eval_jaxpr(closed.jaxpr, closed.consts, *leaves))

    replay.__wrapped__ = fn
    replay.cache_size = lambda: len(cache)
    return replay


def compile_once(fn: Callable, compiler_options: dict | None = None) -> Callable:
    """``fn`` jitted and compiled ahead of time with ``compiler_options`` (e.g.
    :data:`jaxdarts.kernels.FAST_COMPILE_OPTIONS`) once per input signature (pytree
    structure, shapes, dtypes, weak types); later calls with that signature run the compiled
    program. Called with tracers (inside ``jit``, ``eval_shape``, ``vmap``) it is a plain
    ``jax.jit`` of ``fn``."""
    compiled = {}
    jitted = jax.jit(fn)

    def call(*args):
        leaves, tree = jax.tree.flatten(args)
        if any(isinstance(a, jax.core.Tracer) for a in leaves):  # inside a transformation: trace as usual
            return jitted(*args)
        sig = (tree, input_signature(leaves))
        if sig not in compiled:
            compiled[sig] = jitted.lower(*args).compile(compiler_options)
        return compiled[sig](*args)

    return call
