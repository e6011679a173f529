"""Candidate operations of DARTS-style search spaces (Flax Linen, NHWC).

Every operation follows the original DARTS code (quark0/darts ``operations.py``) so
parameter counts match the PyTorch reference exactly:

* ``ReLU -> conv (no bias) -> BN`` ordering everywhere.
* ``sep_conv_kxk``: two stacked ``(ReLU, depthwise kxk, pointwise 1x1, BN)`` blocks; only
  the first depthwise conv is strided; the first block keeps ``C_in`` channels.
* ``dil_conv_kxk``: ``ReLU, depthwise kxk dilation 2, pointwise, BN``.
* ``max_pool_3x3`` / ``avg_pool_3x3`` (padding 1, average excludes padding); in the search
  network (``affine=False``) pools are followed by an affine-free BN, as in DARTS.
* ``skip_connect``: identity, :class:`FactorizedReduce` when strided.
* ``none``: zeros of the strided shape.
* ``noise`` (RobustDARTS S4): N(0, 1) noise shaped like the strided input.
* ``nor_conv_1x1`` / ``nor_conv_3x3`` (NAS-Bench-201): ``ReLU, conv, BN``.

Performance notes (see ``benchmarks/RESULTS.md``): XLA:CPU is slow at grouped
(``feature_group_count``) convolutions, so depthwise convolutions and pools are sums /
maxima of shifted slices ("taps") implemented as primitives with gather-form transposes
(:mod:`jaxdarts.kernels`; plain autodiff of the taps made a cell's backward ~45x its
forward), and 1x1 convolutions are ``einsum`` contractions (which stay plain batched
matmuls when edges are ``vmap``-ed together).

Batch norm uses PyTorch's defaults (momentum 0.1 -> Flax momentum 0.9, eps 1e-5), with its
derivative in closed form (:func:`batch_normalize`, a smaller program than autodiff of it).
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from jaxdarts import kernels

Array = jax.Array

PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
"""The DARTS primitive order (also the RobustDARTS S5 space)."""

NB201_PRIMITIVES = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

# Kaiming-uniform with a=sqrt(5), PyTorch's default conv/linear initialisation.
_torch_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_bias_init(fan_in: int):
    """PyTorch's default conv/linear bias initialisation ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
    bound = 1.0 / max(fan_in, 1) ** 0.5
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_dense(x, features: int, name: str | None = None):
    """``nn.Dense(features)(x)`` initialised as PyTorch's ``nn.Linear``: weight
    kaiming-uniform(a=sqrt(5)) and bias ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (Flax's
    default bias is 0). Call inside a compact module; the parameters are ``name/kernel``,
    ``name/bias``."""
    return nn.Dense(features, kernel_init=_torch_init, bias_init=_torch_bias_init(x.shape[-1]), name=name)(x)


def _feature_and_reduction_axes(ndim: int, axis) -> tuple[tuple[int, ...], tuple[int, ...]]:
    feat = tuple(a % ndim for a in ((axis,) if isinstance(axis, int) else tuple(axis)))
    return feat, tuple(a for a in range(ndim) if a not in feat)


def _moments(x: Array, axes: tuple[int, ...], centered: bool) -> tuple[Array, Array]:
    mean = jnp.mean(x, axes)
    if centered:  # E[(x - E[x])^2]
        var = jnp.mean(lax.square(x - jnp.expand_dims(mean, axes)), axes)
    else:  # E[x^2] - E[x]^2, clipped at 0: Flax's fast variance, in one fusion
        var = jnp.maximum(0.0, jnp.mean(lax.square(x), axes) - lax.square(mean))
    return mean, var


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def batch_normalize(x: Array, axes: tuple[int, ...], epsilon: float, centered: bool = False):
    """``((x - mean) / sqrt(var + epsilon), mean, var)`` with the batch statistics over
    ``axes`` (biased variance; ``centered=False``: ``E[x^2] - E[x]^2`` clipped at 0, as Flax's
    ``BatchNorm``; ``True``: ``E[(x - E[x])^2]``).

    The derivative is written in closed form (``jax.custom_jvp``): with ``x^ = (x - mean) r``,
    ``r = 1/sqrt(var + eps)`` and means over ``axes``,
    ``dy = r (dx - mean(dx) - x^ mean(x^ dx))``, ``dmean = mean(dx)``,
    ``dvar = 2 mean(x^ dx) / r``. It is linear in ``dx`` (so JAX transposes it for reverse
    mode) and made of differentiable ops (so ``grad`` of ``grad``, Hessian-vector products and
    ``vmap`` work to any order), and it is ~3x fewer ops than differentiating the statistics
    op by op: BatchNorm was ~30% of a DARTS search step's program (2026-12-02)."""
    mean, var = _moments(x, axes, centered)
    y = (x - jnp.expand_dims(mean, axes)) * lax.rsqrt(jnp.expand_dims(var, axes) + epsilon)
    return y, mean, var


@batch_normalize.defjvp
def _batch_normalize_jvp(axes, epsilon, centered, primals, tangents):
    (x,), (dx,) = primals, tangents
    mean, var = _moments(x, axes, centered)
    r = lax.rsqrt(var + epsilon)
    re = jnp.expand_dims(r, axes)
    xhat = (x - jnp.expand_dims(mean, axes)) * re
    dmean = jnp.mean(dx, axes)
    cov = jnp.mean(xhat * dx, axes)
    dy = re * (dx - jnp.expand_dims(dmean, axes) - xhat * jnp.expand_dims(cov, axes))
    return (xhat, mean, var), (dy, dmean, 2.0 * cov / r)


class BatchStatNorm(nn.Module):
    """BatchNorm that always normalises with the statistics of its input batch and keeps
    no running statistics (PyTorch ``BatchNorm2d(track_running_stats=False)``, in training
    and evaluation alike). ``axis`` as :func:`batch_norm`."""

    affine: bool = False
    axis: int | tuple[int, ...] = -1
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x):
        feat, red = _feature_and_reduction_axes(x.ndim, self.axis)
        y = batch_normalize(x, red, self.epsilon, True)[0]
        if self.affine:
            if feat != (x.ndim - 1,):
                raise ValueError("an affine BatchStatNorm normalises the last axis only")
            y = y * self.param("scale", nn.initializers.ones, x.shape[-1:], x.dtype) + \
                self.param("bias", nn.initializers.zeros, x.shape[-1:], x.dtype)
        return y


BN_MOMENTUM = 0.9
"""Flax ``momentum`` of the running statistics: ``running = 0.9 running + 0.1 batch``
(PyTorch's ``momentum=0.1``)."""


class BatchNorm(nn.Module):
    """Flax's ``nn.BatchNorm`` (the same variables, shapes, initial values, statistics and
    running-average update: ``batch_stats/{mean, var}``, ``params/{scale, bias}``) with the
    batch-statistics derivative in closed form (:func:`batch_normalize`): a smaller program
    to compile. ``axis``: the feature axes (statistics per feature, reduced over the rest)."""

    use_running_average: bool = False
    axis: int | tuple[int, ...] = -1
    momentum: float = BN_MOMENTUM
    epsilon: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        feat, red = _feature_and_reduction_axes(x.ndim, self.axis)
        shape = tuple(x.shape[a] for a in feat)
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), shape)
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), shape)
        scale = (jnp.expand_dims(self.param("scale", nn.initializers.ones, shape, jnp.float32), red)
                 if self.use_scale else None)
        if self.use_running_average:  # Flax's arithmetic: (x - mean) * (rsqrt(var + eps) * scale)
            mul = lax.rsqrt(jnp.expand_dims(ra_var.value, red) + self.epsilon)
            y = (x - jnp.expand_dims(ra_mean.value, red)) * (mul if scale is None else mul * scale)
        else:
            y, mean, var = batch_normalize(x, red, self.epsilon, False)
            if scale is not None:
                y = y * scale
            if not self.is_initializing():
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        if self.use_bias:
            y = y + jnp.expand_dims(self.param("bias", nn.initializers.zeros, shape, jnp.float32), red)
        return y


def batch_norm(train: bool, affine: bool, name: str | None = None, axis: int | tuple[int, ...] = -1,
               track_running_stats: bool = True) -> nn.Module:
    """PyTorch-equivalent BatchNorm2d (momentum 0.1, eps 1e-5) over NHWC channels
    (:class:`BatchNorm`).

    ``axis`` names the feature axes: ``(0, -1)`` normalises a stack ``(G, N, H, W, C)`` of
    G independent BatchNorm2d inputs at once (statistics per ``(g, c)``).
    ``track_running_stats=False``: :class:`BatchStatNorm` (batch statistics in evaluation
    too, no ``batch_stats`` variables)."""
    if not track_running_stats:
        return BatchStatNorm(affine, axis, name=name)
    return BatchNorm(use_running_average=not train, axis=axis, use_scale=affine, use_bias=affine, name=name)


depthwise_conv = kernels.depthwise_conv
max_pool_3x3 = kernels.max_pool_3x3
avg_pool_3x3 = kernels.avg_pool_3x3


def native_max_pool_3x3(x: Array, stride: int) -> Array:
    """3x3 max pool, padding 1, as one ``reduce_window`` (the ``'conv'`` lowering: one
    HLO op forward, ``select_and_scatter_add`` backward, which also routes a tied window's
    gradient to its first maximum)."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, stride, stride, 1),
                             [(0, 0), (1, 1), (1, 1), (0, 0)])


def native_avg_pool_3x3(x: Array, stride: int) -> Array:
    """3x3 average pool, padding 1, padding not counted, as one ``reduce_window`` sum
    divided by a constant count (the ``'conv'`` lowering)."""
    total = lax.reduce_window(x, 0.0, lax.add, (1, 3, 3, 1), (1, stride, stride, 1),
                              [(0, 0), (1, 1), (1, 1), (0, 0)])
    return kernels.divide_by_window_count(total, x.shape, stride)


class PointwiseConv(nn.Module):
    """1x1 convolution as an einsum (``(N,H,W,Cin) -> (N,H',W',Cout)``); no bias unless
    ``use_bias`` (PyTorch's default bias init)."""

    features: int
    stride: int = 1
    use_bias: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", _torch_init, (1, 1, x.shape[-1], self.features), x.dtype)
        if self.stride > 1:
            x = x[:, :: self.stride, :: self.stride, :]
        # its own buffer on XLA:CPU, so the BatchNorm backward that produces the cotangent
        # is computed once, not again inside the transposing copy of the kernel gradient
        y = kernels.materialize(jnp.einsum("nhwc,co->nhwo", x, kernel[0, 0]))
        if self.use_bias:
            y = y + self.param("bias", _torch_bias_init(x.shape[-1]), (self.features,), x.dtype)
        return y


class DepthwiseConv(nn.Module):
    """Depthwise kxk convolution without bias; kernel stored as ``(k, k, 1, C)`` (HWIO)."""

    kernel_size: int
    stride: int = 1
    dilation: int = 1
    lowering: str = "auto"  # jaxdarts.kernels.LOWERINGS or 'auto'

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k = self.kernel_size
        kernel = self.param("kernel", _torch_init, (k, k, 1, x.shape[-1]), x.dtype)
        if kernels.resolve_lowering(self.lowering) == "conv":
            pad = self.dilation * (k - 1) // 2
            return lax.conv_general_dilated(x, kernel, (self.stride,) * 2, [(pad, pad)] * 2,
                                            rhs_dilation=(self.dilation,) * 2,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            feature_group_count=x.shape[-1])
        # Its own buffer: the output is both the pointwise conv's input and a residual of the
        # backward pass. Inside a scanned edge group (edge_loop='scan') XLA:CPU otherwise
        # fuses the K*K taps again into the copy that stores the residual: a normal cell's
        # forward + backward at paper size took 1.65 s instead of 1.47 s (2026-12-02).
        return kernels.materialize(depthwise_conv(x, kernel[:, :, 0, :], self.stride, self.dilation))


class ReLUConvBN(nn.Module):
    """ReLU -> kxk conv -> BN (DARTS ``ReLUConvBN``; NB201 ``nor_conv``). The conv has a
    bias only with ``use_bias`` (NAS-Bench-201's cells: ``bias = not affine``)."""

    C_out: int
    kernel_size: int = 1
    stride: int = 1
    affine: bool = True
    final_bn: bool = True  # False: return the pre-BN tensor (the caller normalises; see MixedOp)
    use_bias: bool = False
    track_running_stats: bool = True

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        x = nn.relu(x)
        if self.kernel_size == 1:
            x = PointwiseConv(self.C_out, self.stride, self.use_bias)(x)
        else:
            p = (self.kernel_size - 1) // 2
            x = nn.Conv(self.C_out, (self.kernel_size,) * 2, self.stride, padding=[(p, p), (p, p)],
                        use_bias=self.use_bias, kernel_init=_torch_init,
                        bias_init=_torch_bias_init(self.kernel_size ** 2 * x.shape[-1]))(x)
        return batch_norm(train, self.affine, track_running_stats=self.track_running_stats)(x) if self.final_bn else x


class DilConv(nn.Module):
    """ReLU -> depthwise kxk (dilation d) -> pointwise -> BN."""

    C_out: int
    kernel_size: int
    stride: int
    dilation: int
    affine: bool = True
    final_bn: bool = True
    lowering: str = "auto"

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        x = nn.relu(x)
        x = DepthwiseConv(self.kernel_size, self.stride, self.dilation, self.lowering)(x)
        x = PointwiseConv(self.C_out)(x)
        return batch_norm(train, self.affine)(x) if self.final_bn else x


class SepConv(nn.Module):
    """Two stacked DilConv(dilation 1) blocks; only the first is strided and the first
    keeps the input channel count (DARTS ``SepConv``)."""

    C_out: int
    kernel_size: int
    stride: int
    affine: bool = True
    final_bn: bool = True  # the second block's BN
    first_bn: bool = True  # the first block's BN
    lowering: str = "auto"

    @nn.compact
    def __call__(self, x: Array, train: bool, part: str = "all") -> Array:
        """``part``: ``'all'``, or ``'first'`` / ``'second'`` block only (a caller that
        normalises several ops' first blocks together runs them one block at a time)."""
        if part != "second":
            x = DilConv(x.shape[-1], self.kernel_size, self.stride, 1, self.affine, self.first_bn, self.lowering,
                        name="DilConv_0")(x, train)
            if part == "first":
                return x
        return DilConv(self.C_out, self.kernel_size, 1, 1, self.affine, self.final_bn, self.lowering,
                       name="DilConv_1")(x, train)


class FactorizedReduce(nn.Module):
    """ReLU, two 1x1 stride-2 convs (C_out/2 each, the second on the input shifted by one
    pixel), concatenated, BN. Odd spatial sizes (an error in PyTorch) are handled by
    zero-padding the shifted input at the far edge."""

    C_out: int
    affine: bool = True
    final_bn: bool = True

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        if self.C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even C_out, got {self.C_out}")
        x = nn.relu(x)
        a = PointwiseConv(self.C_out // 2, 2)(x)
        shifted = x[:, 1:, 1:, :]
        if x.shape[1] % 2 or x.shape[2] % 2:
            shifted = jnp.pad(shifted, ((0, 0), (0, x.shape[1] % 2), (0, x.shape[2] % 2), (0, 0)))
        b = PointwiseConv(self.C_out // 2, 2)(shifted)
        x = jnp.concatenate([a, b], axis=-1)
        return batch_norm(train, self.affine)(x) if self.final_bn else x


class Zero(nn.Module):
    """The ``none`` op: zeros with the strided shape."""

    C_out: int
    stride: int = 1

    def __call__(self, x: Array, train: bool) -> Array:
        x = x[:, :: self.stride, :: self.stride, :]
        return jnp.zeros(x.shape[:3] + (self.C_out,), x.dtype)


class Identity(nn.Module):
    def __call__(self, x: Array, train: bool) -> Array:
        return x


class Pool(nn.Module):
    """3x3 max/avg pool; followed by affine-free BN when ``bn`` (search network)."""

    kind: str
    stride: int = 1
    bn: bool = False
    lowering: str = "auto"

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        if kernels.resolve_lowering(self.lowering) == "conv":
            x = native_max_pool_3x3(x, self.stride) if self.kind == "max" else native_avg_pool_3x3(x, self.stride)
        else:
            x = max_pool_3x3(x, self.stride) if self.kind == "max" else avg_pool_3x3(x, self.stride)
        if self.bn:
            x = batch_norm(train, affine=False)(x)
        return x


class Noise(nn.Module):
    """RobustDARTS S4 ``noise`` op: N(0, 1) samples shaped like the strided input
    (independent of the input values). Draws from the ``'noise'`` RNG stream; without
    one (e.g. deterministic evaluation) it uses a fixed key."""

    stride: int = 1

    def __call__(self, x: Array, train: bool) -> Array:
        x = x[:, :: self.stride, :: self.stride, :]
        key = self.make_rng("noise") if self.has_rng("noise") else jax.random.key(0)
        return jax.random.normal(key, x.shape, x.dtype)


def _nb201_pool(C_in: int, C_out: int, stride: int, affine: bool, name, lowering) -> nn.Module:
    if C_in != C_out:  # NAS-Bench-201 prepends a ReLUConvBN when channels change
        raise ValueError("nb201 avg_pool_3x3 with C_in != C_out is not used in the cell")
    return Pool("avg", stride, bn=False, lowering=lowering, name=name)


def make_op(name: str, C_in: int, C_out: int, stride: int, affine: bool, family: str = "darts",
            module_name: str | None = None, final_bn: bool = True, lowering: str = "auto",
            track_running_stats: bool = True) -> nn.Module:
    """Builds the operation ``name``.

    Args:
      name: one of :data:`OP_NAMES`.
      C_in, C_out: channels (equal inside DARTS cells).
      stride: 1 or 2 (reduction edges).
      affine: False in search networks (affine-free BN, pools followed by BN),
        True in evaluation networks.
      family: ``'darts'`` or ``'nb201'`` (NAS-Bench-201: pools have no BN; ``nor_conv``
        convs have a bias when ``affine`` is False, as ``bias = not affine`` in
        AutoDL-Projects and in the zero-cost-proxy code).
      module_name: Flax submodule name.
      final_bn: False leaves out the op's last BatchNorm (only for ops where
        :func:`ends_with_bn` is true): the search supernet normalises all such outputs of
        an edge in one stacked BatchNorm (same statistics, one op instead of up to 7).
      lowering: depthwise convs and pools as :mod:`jaxdarts.kernels` primitives (``'taps'``)
        or XLA's own ops (``'conv'``); ``'auto'``: see :func:`jaxdarts.kernels.resolve_lowering`.
      track_running_stats: False gives ``nor_conv`` ops batch-statistics BatchNorm in
        evaluation too (:class:`BatchStatNorm`; NAS-Bench-201 option).
    """
    check_ops([name])
    name = base_op(name)
    if not final_bn and not ends_with_bn(name, stride, affine, family):
        raise ValueError(f"op {name!r} (stride {stride}, affine {affine}, {family}) has no parameter-free final "
                         "BatchNorm to leave out")
    if name in ("nor_conv_1x1", "nor_conv_3x3"):
        return ReLUConvBN(C_out, 1 if name == "nor_conv_1x1" else 3, stride, affine, final_bn,
                          use_bias=family == "nb201" and not affine, track_running_stats=track_running_stats,
                          name=module_name)
    return _OPS[name](C_in, C_out, stride, affine, family, module_name, final_bn, lowering)


def ends_with_bn(name: str, stride: int, affine: bool, family: str = "darts") -> bool:
    """Whether op ``name`` ends with a BatchNorm that has no parameters (``affine=False``),
    so that its output can be normalised together with other ops' outputs."""
    name = base_op(name)
    if affine:
        return False
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        return family == "darts"  # NAS-Bench-201 pools have no BatchNorm
    if name == "skip_connect":
        return stride == 2  # FactorizedReduce
    return name in SEP_KERNEL or name in ("dil_conv_3x3", "dil_conv_5x5", "nor_conv_1x1", "nor_conv_3x3")


SEP_KERNEL = {"sep_conv_3x3": 3, "sep_conv_5x5": 5, "sep_conv_7x7": 7}
"""Kernel size of each separable-conv op."""


def _sep(k):
    return lambda ci, co, s, a, f, n, b, lw: SepConv(co, k, s, a, b, lowering=lw, name=n)


_OPS: dict[str, Callable[..., nn.Module]] = {  # (C_in, C_out, stride, affine, family, name, final_bn, lowering)
    "none": lambda ci, co, s, a, f, n, b, lw: Zero(co, s, name=n),
    "max_pool_3x3": lambda ci, co, s, a, f, n, b, lw: Pool("max", s, bn=(not a and f == "darts" and b), lowering=lw,
                                                           name=n),
    "avg_pool_3x3": lambda ci, co, s, a, f, n, b, lw: (
        Pool("avg", s, bn=not a and b, lowering=lw, name=n) if f == "darts" else _nb201_pool(ci, co, s, a, n, lw)),
    "skip_connect": lambda ci, co, s, a, f, n, b, lw: (
        Identity(name=n) if s == 1 else FactorizedReduce(co, a, b, name=n)),
    **{name: _sep(k) for name, k in SEP_KERNEL.items()},
    "dil_conv_3x3": lambda ci, co, s, a, f, n, b, lw: DilConv(co, 3, s, 2, a, b, lw, name=n),
    "dil_conv_5x5": lambda ci, co, s, a, f, n, b, lw: DilConv(co, 5, s, 2, a, b, lw, name=n),
    "noise": lambda ci, co, s, a, f, n, b, lw: Noise(s, name=n),
    "nor_conv_1x1": lambda ci, co, s, a, f, n, b, lw: ReLUConvBN(co, 1, s, a, b, name=n),
    "nor_conv_3x3": lambda ci, co, s, a, f, n, b, lw: ReLUConvBN(co, 3, s, a, b, name=n),
}
OP_NAMES: tuple[str, ...] = tuple(_OPS)


def is_identity(name: str, stride: int) -> bool:
    """Whether the op is the identity (drop-path is never applied to identities)."""
    return base_op(name) == "skip_connect" and stride == 1


def base_op(name: str | None) -> str | None:
    """The op an alias names: ``'skip_connect@2'`` is a second, independent
    ``skip_connect`` on the same edge (StacNAS's stage 2 lists the skip twice; at stride 2
    they are two FactorizedReduce modules with their own weights)."""
    return name if name is None else name.split("@", 1)[0]


def check_ops(names: Sequence[str]) -> None:
    """ValueError naming an unknown op (or a malformed alias ``op@k``, k a positive integer)."""
    for n in names:
        base, _, k = n.partition("@")
        if base not in _OPS or ("@" in n and not (k.isdigit() and int(k) > 1)):
            raise ValueError(f"unknown op {n!r}; accepted: {', '.join(OP_NAMES)} (and aliases op@k, k >= 2)")
