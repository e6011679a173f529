"""Depthwise convolution and 3x3 pooling as JAX primitives with hand-written transposes.

Why: written with plain ``lax`` ops as sums of shifted slices ("taps"), these ops are fast
forward on XLA:CPU, but JAX transposes every slice into a full-size ``pad`` of the
cotangent. In a DARTS cell XLA then materialises tens of padded tensors per edge, re-computes
the upstream cotangent in each of them and sums them inside layout-changing fusions: the
backward pass of a cell cost ~45x its forward (``benchmarks/cell_backward.py``).

Here the same ops are primitives whose transposes are again "gather-form" tap sums, so
the backward reads the cotangent once per tap inside a single fusion:

* ``depthwise(x, k)``: ``y[n, p, c] = sum_t xpad[n, s*p + d*t, c] * k[t, c]`` (bilinear).
* ``depthwise_input_grad(g, k)``: its transpose in ``x`` (a stride-1 depthwise correlation
  of the dilated, padded cotangent with the flipped kernel) (bilinear).
* ``depthwise_kernel_grad(x, g)``: its transpose in ``k`` (one reduction per tap) (bilinear).
  The three are the partial derivatives of one trilinear form, so each one's transposes are
  the other two: ``grad``, ``jvp``, ``vmap``, ``grad``-of-``grad`` and ``jvp``-of-``grad``
  (Hessian-vector products) all work to any order, with no ``custom_vjp``.
* ``tap_select(idx, x)`` / ``tap_scatter(idx, g)``: pick tap ``idx`` of each window (max
  pooling's derivative routes the cotangent to the first maximum, as PyTorch does) and
  its transpose (linear in ``x`` / ``g``; ``idx`` is an integer operand).

* ``materialize(x)``: the identity, computed into its own buffer on XLA:CPU (forward and
  cotangent), so that XLA does not fuse one long producer chain into each of its consumers.
* ``after(x, dep)``: the identity in ``x``, computed only once ``dep`` is (a data
  dependency XLA cannot remove or reorder), and ``remat(fun)``: rematerialisation
  built on it that saves memory on XLA:CPU, where ``jax.checkpoint`` does not.

This module is the one place for backend-specific lowerings. The models receive the
choice as a value, the ``lowering`` attribute (:data:`LOWERINGS`; ``'auto'`` resolved by
:func:`resolve_lowering`): ``'taps'`` builds depthwise convs and pools from the primitives
here (fastest on XLA:CPU), ``'conv'`` from XLA's own grouped convolutions and
``reduce_window`` (GPU/TPU, compact programs). The fusion barriers pick their lowering per
platform by themselves (identity off CPU).

On XLA:CPU the kernel gradient runs as a loop over slabs of the batch (cache-resident
reductions); ``benchmarks/RESULTS.md`` has the measurements behind both CPU lowerings.

Layout: NHWC with any number of leading batch dimensions shared by the data and the
kernel (``x: B + (N, H, W, C)``, ``k: B + (K, K, C)``); ``vmap`` over edges adds one.
"""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

Array = jax.Array

LOWERINGS = ("taps", "conv")
"""Lowerings of depthwise convolutions and 3x3 pools (the ``lowering`` attribute of the
models; ``config.model.depthwise``): ``'taps'`` (this module's primitives, shifted slices;
on XLA:CPU ~20x faster forward, ~3x slower to compile) or ``'conv'`` (XLA's own
``feature_group_count`` convolution and ``reduce_window`` pools, and one stacked BatchNorm
per mixed op: the form for GPUs/TPUs and for compile time). Numerically equal (tested);
the search supernet's ``batch_stats`` trees differ (stacked BatchNorms in ``'conv'``)."""


FAST_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
"""XLA options of a fast compile (what ``jax_disable_most_optimizations`` sets): for
programs that run once or a few times (a supernet's init, proxy scoring of a few
candidates), where XLA:CPU's optimisation passes cost more than they save; used with
:func:`jaxdarts.jit_cache.compile_once`."""


def resolve_lowering(name: str, backend: str | None = None) -> str:
    """``'auto'`` -> ``'taps'`` on CPU, ``'conv'`` on GPU/TPU (``backend`` defaults to
    JAX's default backend); ``'taps'``/``'conv'`` are returned as they are. Raises
    ValueError naming the accepted values otherwise."""
    if name == "auto":
        return "taps" if (backend or jax.default_backend()) == "cpu" else "conv"
    if name not in LOWERINGS:
        raise ValueError(f"unknown lowering {name!r}; accepted: {', '.join(LOWERINGS)}, auto")
    return name


def out_size(n: int, k: int, stride: int, pad: int, dilation: int) -> int:
    return (n + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def same_pad(k: int, dilation: int) -> int:
    """PyTorch DARTS padding of a k x k (dilated) window: ``dilation * (k - 1) // 2``."""
    return dilation * (k - 1) // 2


def _slice_hw(x, h0, w0, ho, wo, stride):
    """``x[..., h0 : h0 + stride*(ho-1)+1 : stride, w0 : ..., :]`` on the H, W axes (-3, -2)."""
    start = [0] * x.ndim
    limit = list(x.shape)
    strides = [1] * x.ndim
    start[-3], start[-2] = h0, w0
    limit[-3], limit[-2] = h0 + stride * (ho - 1) + 1, w0 + stride * (wo - 1) + 1
    strides[-3] = strides[-2] = stride
    return lax.slice(x, start, limit, strides)


def _pad_hw(x, lo_h, hi_h, lo_w, hi_w, interior=0, value=0.0):
    cfg = [(0, 0, 0)] * x.ndim
    cfg[-3] = (lo_h, hi_h, interior)
    cfg[-2] = (lo_w, hi_w, interior)
    return lax.pad(x, jnp.asarray(value, x.dtype), cfg)


def _kernel_tap(k, i, j, data_ndim):
    """``k[..., i, j, :]`` reshaped to broadcast against data ``B + (N, H, W, C)``."""
    t = k[..., i, j, :]
    nb = k.ndim - 3
    return t.reshape(t.shape[:nb] + (1,) * (data_ndim - nb - 1) + t.shape[-1:])


def _out_hw(shape, k, stride, pad, dilation):
    return out_size(shape[-3], k, stride, pad, dilation), out_size(shape[-2], k, stride, pad, dilation)


def _taps(xp, k, stride, dilation, out_hw):
    """Yields ``(i, j, window)`` for the k*k shifted (strided, dilated) windows of ``xp``."""
    for i in range(k):
        for j in range(k):
            yield i, j, _slice_hw(xp, i * dilation, j * dilation, out_hw[0], out_hw[1], stride)


def _sum(terms):
    return functools.reduce(operator.add, terms)


# ----------------------------------------------------------------------------- impls


def _depthwise_impl(x, k, *, stride, dilation):
    K = k.shape[-2]
    pad = same_pad(K, dilation)
    xp = _pad_hw(x, pad, pad, pad, pad)
    return _sum(sl * _kernel_tap(k, i, j, x.ndim)
                for i, j, sl in _taps(xp, K, stride, dilation, _out_hw(x.shape, K, stride, pad, dilation)))


def _dilate_for_transpose(g, K, stride, dilation, in_hw, value=0.0):
    """Pads/dilates an output-shaped array so that a stride-1 correlation with the flipped
    window gives the input-shaped transpose."""
    pad = same_pad(K, dilation)
    lo = dilation * (K - 1) - pad
    ho, wo = g.shape[-3], g.shape[-2]
    hi_h = in_hw[0] + dilation * (K - 1) - lo - (stride * (ho - 1) + 1)
    hi_w = in_hw[1] + dilation * (K - 1) - lo - (stride * (wo - 1) + 1)
    return _pad_hw(g, lo, hi_h, lo, hi_w, interior=stride - 1, value=value)


def _depthwise_input_grad_impl(g, k, *, stride, dilation, in_hw):
    K = k.shape[-2]
    G = _dilate_for_transpose(g, K, stride, dilation, in_hw)
    return _sum(sl * _kernel_tap(k, K - 1 - i, K - 1 - j, g.ndim) for i, j, sl in _taps(G, K, 1, dilation, in_hw))


def _depthwise_kernel_grad_impl(x, g, *, stride, dilation, ksize):
    K = ksize
    pad = same_pad(K, dilation)
    xp = _pad_hw(x, pad, pad, pad, pad)
    nb = x.ndim - 4  # leading batch dims shared with the kernel
    axes = tuple(range(nb, x.ndim - 1))
    # One variadic reduction of the K*K products: XLA:CPU does not fuse sibling reductions,
    # so K*K separate sums were K*K kernels, each streaming x and g (2 fusions per tap in the
    # search step); one reduce with K*K accumulators is one kernel that reads each tap's
    # window from cache: 3-7x faster and ~10x fewer fusions (benchmarks/RESULTS.md, 2026-12-02).
    prods = [sl * g for _, _, sl in _taps(xp, K, stride, dilation, g.shape[-3:-1])]
    zeros = [jnp.zeros((), p.dtype) for p in prods]
    taps = lax.reduce(prods, zeros, lambda a, b: [u + v for u, v in zip(a, b)], axes)
    out = jnp.stack(taps, axis=-2)  # B + (K*K, C)
    return out.reshape(out.shape[:-2] + (K, K, out.shape[-1]))


KERNEL_GRAD_SLAB = 1 << 18
"""Elements of ``x`` per loop iteration in the XLA:CPU lowering of
:func:`depthwise_kernel_grad` (see :func:`_depthwise_kernel_grad_cpu`)."""


def _batch_chunk(n: int, per_sample: int) -> int:
    """The largest divisor of ``n`` whose slab holds at most ``KERNEL_GRAD_SLAB`` elements
    (at least 1)."""
    best = 1
    for c in range(1, n + 1):
        if n % c == 0 and c * per_sample <= KERNEL_GRAD_SLAB:
            best = c
    return best


def _depthwise_kernel_grad_cpu(x, g, *, stride, dilation, ksize):
    """XLA:CPU lowering of the kernel gradient: the same tap sums (one variadic reduction,
    :func:`_depthwise_kernel_grad_impl`), accumulated over slabs of the batch axis in a loop,
    so that each slab is read from cache by all K*K accumulators: with K*K separate
    reductions 2-4x faster than without the loop (8 edges x batch 64 x 32x32x16, 5x5:
    259 ms -> 61 ms, 2026-11); with the variadic reduction 47 ms -> 18 ms (2026-12-02).
    Equal up to summation order."""
    nb = x.ndim - 4
    n = x.shape[nb]
    chunk = _batch_chunk(n, int(np.prod(x.shape[:nb] + x.shape[nb + 1:])))
    kw = dict(stride=stride, dilation=dilation, ksize=ksize)
    if chunk == n:
        return _depthwise_kernel_grad_impl(x, g, **kw)

    def body(i, acc):
        xs = lax.dynamic_slice_in_dim(x, i * chunk, chunk, axis=nb)
        gs = lax.dynamic_slice_in_dim(g, i * chunk, chunk, axis=nb)
        return acc + _depthwise_kernel_grad_impl(xs, gs, **kw)

    acc = jnp.zeros(x.shape[:nb] + (ksize, ksize, x.shape[-1]), jnp.result_type(x, g))
    return lax.fori_loop(0, n // chunk, body, acc)


def _tap_select_impl(idx, x, *, stride, ksize, pad):
    xp = _pad_hw(x, pad, pad, pad, pad)
    out = jnp.zeros(idx.shape, x.dtype)
    for t, (_, _, sl) in enumerate(_taps(xp, ksize, stride, 1, _out_hw(x.shape, ksize, stride, pad, 1))):
        out = jnp.where(idx == t, sl, out)
    return out


def _tap_scatter_impl(idx, g, *, stride, ksize, pad, in_hw):
    G = _dilate_for_transpose(g, ksize, stride, 1, in_hw)
    I = _dilate_for_transpose(idx, ksize, stride, 1, in_hw, value=-1)
    zero = jnp.zeros((), g.dtype)
    return _sum(jnp.where(sl_i == (ksize - 1 - i) * ksize + (ksize - 1 - j), sl_g, zero)
                for (i, j, sl_g), (_, _, sl_i) in zip(_taps(G, ksize, 1, 1, in_hw), _taps(I, ksize, 1, 1, in_hw)))


# ------------------------------------------------------------------------ primitives


def _primitive(name, impl, shape_fn):
    p = Primitive(name)

    @functools.lru_cache(maxsize=None)
    def jitted(items):  # eager calls run the platform's lowering, as under jit
        return jax.jit(lambda *args: p.bind(*args, **dict(items)))

    p.def_impl(lambda *args, **params: jitted(tuple(sorted(params.items())))(*args))
    p.def_abstract_eval(lambda *avals, **kw: jax.core.ShapedArray(shape_fn(*avals, **kw), avals[-1].dtype))
    mlir.register_lowering(p, mlir.lower_fun(impl, multiple_results=False))
    return p


def _dw_shape(x, k, *, stride, dilation):
    K = k.shape[-2]
    return x.shape[:-3] + _out_hw(x.shape, K, stride, same_pad(K, dilation), dilation) + x.shape[-1:]


depthwise_p = _primitive("jaxdarts_depthwise", _depthwise_impl, _dw_shape)
depthwise_input_grad_p = _primitive(
    "jaxdarts_depthwise_input_grad", _depthwise_input_grad_impl,
    lambda g, k, *, stride, dilation, in_hw: g.shape[:-3] + tuple(in_hw) + g.shape[-1:])
depthwise_kernel_grad_p = _primitive(
    "jaxdarts_depthwise_kernel_grad", _depthwise_kernel_grad_impl,
    lambda x, g, *, stride, dilation, ksize: x.shape[:-4] + (ksize, ksize, x.shape[-1]))
mlir.register_lowering(depthwise_kernel_grad_p, mlir.lower_fun(_depthwise_kernel_grad_cpu, multiple_results=False),
                       platform="cpu")
tap_select_p = _primitive(
    "jaxdarts_tap_select", _tap_select_impl, lambda idx, x, *, stride, ksize, pad: idx.shape)
tap_scatter_p = _primitive(
    "jaxdarts_tap_scatter", _tap_scatter_impl,
    lambda idx, g, *, stride, ksize, pad, in_hw: g.shape[:-3] + tuple(in_hw) + g.shape[-1:])


def _hw(aval):
    return tuple(aval.shape[-3:-1])


def _ksize(aval):
    return aval.shape[-2]


# y = depthwise(x, k):  x-transpose -> input_grad(ct, k);  k-transpose -> kernel_grad(x, ct)
ad.defbilinear(
    depthwise_p,
    lambda ct, x, k, *, stride, dilation: depthwise_input_grad_p.bind(
        ct, k, stride=stride, dilation=dilation, in_hw=_hw(x.aval)),
    lambda ct, x, k, *, stride, dilation: depthwise_kernel_grad_p.bind(
        x, ct, stride=stride, dilation=dilation, ksize=_ksize(k.aval)))
# gx = input_grad(g, k):  g-transpose -> depthwise(ct, k);  k-transpose -> kernel_grad(ct, g)
ad.defbilinear(
    depthwise_input_grad_p,
    lambda ct, g, k, *, stride, dilation, in_hw: depthwise_p.bind(ct, k, stride=stride, dilation=dilation),
    lambda ct, g, k, *, stride, dilation, in_hw: depthwise_kernel_grad_p.bind(
        ct, g, stride=stride, dilation=dilation, ksize=_ksize(k.aval)))
# gk = kernel_grad(x, g):  x-transpose -> input_grad(g, ct);  g-transpose -> depthwise(x, ct)
ad.defbilinear(
    depthwise_kernel_grad_p,
    lambda ct, x, g, *, stride, dilation, ksize: depthwise_input_grad_p.bind(
        g, ct, stride=stride, dilation=dilation, in_hw=_hw(x.aval)),
    lambda ct, x, g, *, stride, dilation, ksize: depthwise_p.bind(x, ct, stride=stride, dilation=dilation))


def _index_linear(prim, transpose_prim, transpose_params):
    """JVP and transpose of ``prim(idx, x)``, linear in ``x`` (``idx`` is an integer array)."""

    def jvp(primals, tangents, **params):
        idx, x = primals
        _, tx = tangents
        out = prim.bind(idx, x, **params)
        if type(tx) is ad.Zero:
            return out, ad.Zero.from_primal_value(out)
        return out, prim.bind(idx, ad.instantiate_zeros(tx), **params)

    def transpose(ct, idx, x, **params):
        assert not ad.is_undefined_primal(idx)
        if type(ct) is ad.Zero:
            return None, ad.Zero(x.aval.to_ct_aval())
        return None, transpose_prim.bind(idx, ct, **transpose_params(x.aval, params))

    ad.primitive_jvps[prim] = jvp
    ad.primitive_transposes[prim] = transpose


_index_linear(tap_select_p, tap_scatter_p,
              lambda aval, p: dict(stride=p["stride"], ksize=p["ksize"], pad=p["pad"], in_hw=_hw(aval)))
_index_linear(tap_scatter_p, tap_select_p,
              lambda aval, p: dict(stride=p["stride"], ksize=p["ksize"], pad=p["pad"]))


def _batch_rule(prim):
    """vmap: move batch axes to the front and broadcast unbatched operands; the impls accept
    any number of leading batch dimensions shared by all operands."""

    def rule(args, dims, **params):
        size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
        moved = [jnp.broadcast_to(a, (size,) + a.shape) if d is None else jnp.moveaxis(a, d, 0)
                 for a, d in zip(args, dims)]
        return prim.bind(*moved, **params), 0

    batching.primitive_batchers[prim] = rule


for _p in (depthwise_p, depthwise_input_grad_p, depthwise_kernel_grad_p, tap_select_p, tap_scatter_p):
    _batch_rule(_p)


# ------------------------------------------------------------------------ public API


def depthwise_conv(x: Array, kernel: Array, stride: int = 1, dilation: int = 1) -> Array:
    """Depthwise 2-D convolution (NHWC), padding ``dilation*(k-1)//2`` as in DARTS.

    Args:
      x: ``B + (N, H, W, C)``.
      kernel: ``B + (k, k, C)`` (same leading dims ``B`` as ``x``, usually none).
      stride, dilation: as in ``torch.nn.Conv2d``.
    Equal to ``lax.conv_general_dilated(..., feature_group_count=C)`` (tested), with
    gather-form transposes.
    """
    x, kernel = jnp.asarray(x), jnp.asarray(kernel)
    dtype = jnp.result_type(x, kernel)
    return depthwise_p.bind(x.astype(dtype), kernel.astype(dtype), stride=int(stride), dilation=int(dilation))


def _pool_taps(x, stride, pad, ksize=3):
    xp = _pad_hw(x, pad, pad, pad, pad, value=-jnp.inf)
    return [sl for _, _, sl in _taps(xp, ksize, stride, 1, _out_hw(x.shape, ksize, stride, pad, 1))]


def max_pool_3x3(x: Array, stride: int) -> Array:
    """3x3 max pool, padding 1 (padding never wins). The derivative goes to the first
    maximum of each window in row-major order (PyTorch's rule), through :func:`tap_select`."""
    taps = _pool_taps(lax.stop_gradient(x), stride, 1)
    best, idx = taps[0], jnp.zeros(taps[0].shape, jnp.int32)
    for t, sl in enumerate(taps[1:], start=1):
        better = sl > best
        best = jnp.where(better, sl, best)
        idx = jnp.where(better, t, idx)
    idx = materialize(idx)  # computed once (a saved residual; see DepthwiseConv)
    return tap_select_p.bind(idx, x, stride=int(stride), ksize=3, pad=1)


def avg_pool_count(h: int, w: int, stride: int) -> np.ndarray:
    """``(H_out, W_out)`` number of in-image pixels in each 3x3 window (padding 1): the
    divisor of an average pool with ``count_include_pad=False``. A constant."""

    def one(n):
        starts = np.arange(out_size(n, 3, stride, 1, 1)) * stride - 1
        return np.minimum(starts + 3, n) - np.maximum(starts, 0)

    return np.outer(one(h), one(w)).astype(np.float32)


def divide_by_window_count(total: Array, in_shape, stride: int) -> Array:
    """3x3 window sums ``total`` (of an input shaped ``in_shape``) -> averages over the
    in-image pixels of each window."""
    return total / avg_pool_count(in_shape[-3], in_shape[-2], stride).astype(total.dtype)[:, :, None]


def avg_pool_3x3(x: Array, stride: int) -> Array:
    """3x3 average pool, padding 1, padding not counted (``count_include_pad=False``)."""
    ones_k = jnp.ones((3, 3, x.shape[-1]), x.dtype)
    return divide_by_window_count(depthwise_conv(x, ones_k, stride, 1), x.shape, stride)


# ------------------------------------------------------------------ materialisation


def _after_cpu(x, s):
    """``x``, computed once the scalar ``s`` is, into its own buffer: a while loop whose trip
    count (0 or 1, by a NaN test on ``s``) XLA cannot know statically, with body ``x * 1``
    (with a plain identity body XLA hoists ``x`` out of the loop and deletes it). The loop's
    predicate is carried, not computed: two kernels per barrier (the test, the body), not
    four; the DARTS quick step has ~250 barriers (2026-12-02)."""
    if x.size == 0:
        return x
    body = lambda c: (c[0] * c[1].astype(x.dtype), jnp.zeros((), bool))  # x * 1: not invariant
    return lax.while_loop(lambda c: c[1], body, (x, s == s))[0]  # s == s: True unless NaN


def _materialize_cpu(x):
    """Identity that XLA cannot fuse through: :func:`_after_cpu` on one element of ``x``."""
    return x if x.size == 0 else _after_cpu(x, x.reshape(-1)[0])


materialize_p = Primitive("jaxdarts_materialize")
materialize_p.def_impl(lambda x: x)
materialize_p.def_abstract_eval(lambda x: x)
mlir.register_lowering(materialize_p, mlir.lower_fun(lambda x: x, multiple_results=False))
mlir.register_lowering(materialize_p, mlir.lower_fun(_materialize_cpu, multiple_results=False), platform="cpu")
ad.deflinear2(materialize_p, lambda ct, x: [materialize_p.bind(ad.instantiate_zeros(ct))])
batching.primitive_batchers[materialize_p] = lambda args, dims: (materialize_p.bind(args[0]), dims[0])


def materialize(x: Array) -> Array:
    """``x`` (identity in value and derivative), computed into its own buffer on XLA:CPU, in
    the forward pass and for the cotangent in the backward pass. Stops XLA:CPU from fusing a
    long producer chain (e.g. the sum of a mixed op's input gradients) into each of its
    consumers, which recomputes it per consumer, in transposed order for dot operands."""
    return materialize_p.bind(jnp.asarray(x))


# --------------------------------------------------------------- rematerialisation


after_p = Primitive("jaxdarts_after")
after_p.def_impl(lambda x, s: x)
after_p.def_abstract_eval(lambda x, s: x)
mlir.register_lowering(after_p, mlir.lower_fun(lambda x, s: lax.optimization_barrier((x, s))[0],
                                               multiple_results=False))
mlir.register_lowering(after_p, mlir.lower_fun(_after_cpu, multiple_results=False), platform="cpu")


def _after_jvp(primals, tangents):
    (x, s), (tx, _) = primals, tangents
    out = after_p.bind(x, s)
    if type(tx) is ad.Zero:
        return out, ad.Zero.from_primal_value(out)
    return out, after_p.bind(ad.instantiate_zeros(tx), s)


def _after_transpose(ct, x, s):
    assert not ad.is_undefined_primal(s)
    if type(ct) is ad.Zero:
        return ad.Zero(x.aval.to_ct_aval()), None
    return after_p.bind(ct, s), None


def _after_batch(args, dims):
    (x, s), (dx, ds) = args, dims
    if ds is not None:  # any element of s is a dependency on all of it
        s = lax.index_in_dim(s, 0, ds, keepdims=False)
    return after_p.bind(x, s), dx


ad.primitive_jvps[after_p] = _after_jvp
ad.primitive_transposes[after_p] = _after_transpose
batching.primitive_batchers[after_p] = _after_batch


def after(x: Array, dep: Array) -> Array:
    """``x`` (identity in value and in ``x``'s derivative; ``dep`` gets none), computed only
    after ``dep`` is: a data dependency XLA cannot see through or reorder (a while loop on
    XLA:CPU, ``optimization_barrier`` elsewhere)."""
    dep = jnp.asarray(dep)
    s = lax.stop_gradient(dep.reshape(-1)[0] if dep.size else jnp.zeros((), jnp.float32))
    return after_p.bind(jnp.asarray(x), s)


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def remat(fun):
    """``fun`` rematerialised in its backward pass, in a form that also saves memory on
    XLA:CPU (``jax.checkpoint`` does not there: the CPU pipeline drops the optimisation
    barriers and schedules the recomputation next to the forward pass, so every residual
    stays alive; ``benchmarks/RESULTS.md``).

    A ``jax.custom_vjp`` whose forward keeps only ``fun``'s inputs and whose backward
    recomputes ``fun`` from inputs that pass through :func:`after` the output cotangent, so
    the recomputation cannot run before the backward pass reaches it. Forward-over-reverse
    (``jvp`` of ``grad``, Hessian-vector products) keeps one call's intermediates at a time
    too. The backward is wrapped in ``jax.checkpoint`` (a nested ``custom_vjp`` would refuse
    the outer ``jvp``), so reverse-over-reverse (``grad`` of ``grad``) works but, on XLA:CPU,
    saves little memory; :mod:`jaxdarts.hypergrad` uses forward-over-reverse for that reason.
    ``vmap`` works. Not supported: forward mode on ``fun``
    without an inner reverse pass (``jax.jvp`` of the loss itself), as for any
    ``custom_vjp``. Non-float inputs (integers, PRNG keys) get ``float0`` cotangents.
    """

    def wrapped(*args):
        leaves, tree = jax.tree.flatten(args)
        # traced once: forward and recomputation replay the same jaxpr (Python side effects
        # such as Flax's RNG counters would otherwise differ between the two traces); values
        # ``fun`` closes over become explicit inputs, so their derivatives are not lost
        converted, consts = jax.closure_convert(lambda *xs: fun(*jax.tree.unflatten(tree, xs)), *leaves)
        leaves = list(leaves) + list(consts)
        is_f = [_is_float(x) for x in leaves]

        def call(float_leaves, others):
            it_f, it_o = iter(float_leaves), iter(others)
            return converted(*[next(it_f) if f else next(it_o) for f in is_f])

        others = [x for x, f in zip(leaves, is_f) if not f]

        @jax.custom_vjp
        def g(float_leaves, others):
            return call(float_leaves, others)

        def fwd(float_leaves, others):
            return call(float_leaves, others), (float_leaves, others)

        def bwd(res, ct):
            float_leaves, others = res
            return _checkpointed_vjp(call)(float_leaves, others, ct)

        g.defvjp(fwd, bwd)
        return g([x for x, f in zip(leaves, is_f) if f], others)

    return wrapped


def _checkpointed_vjp(call):
    def vjp_of_call(float_leaves, others, ct):
        ct_leaves = [c for c in jax.tree.leaves(ct) if _is_float(c) and np.size(c)]
        if ct_leaves:  # recompute only once the cotangent exists
            dep = ct_leaves[0]
            float_leaves = [after(x, dep) for x in float_leaves]
        _, vjp = jax.vjp(lambda fl: call(fl, others), float_leaves)
        (ct_float,) = vjp(ct)
        ct_others = [np.zeros(np.shape(o), jax.dtypes.float0) for o in others]
        return ct_float, ct_others

    # jax.checkpoint, not remat: an outer jvp (Hessian-vector products) must pass through
    return jax.checkpoint(vjp_of_call)
