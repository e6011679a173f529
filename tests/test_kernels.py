"""The tap primitives against independent lax references, in float64, through every
transformation the library uses: grad, jvp-of-grad (HVPs), grad-of-grad (unrolled second
order), vmap (batched edges) and jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxdarts import kernels

from reference import grouped_conv_depthwise


def _ref_max_pool(x, stride):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, stride, stride, 1),
                             [(0, 0), (1, 1), (1, 1), (0, 0)])


def _stack_max_pool(x, stride):
    """Max over the 9 stacked shifted windows: ``reduce_max``'s own derivatives, exact in
    float64 everywhere. (``reduce_window``'s forward-over-reverse derivative goes through
    ``select_and_gather_add``, which JAX computes with float64 truncated to 32-bit halves
    on GPU: 5e-7 relative error, seen on an H100.)"""
    xp = jnp.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], constant_values=-jnp.inf)
    ho, wo = (x.shape[1] - 1) // stride + 1, (x.shape[2] - 1) // stride + 1
    wins = [xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride] for i in range(3)
            for j in range(3)]
    return jnp.max(jnp.stack(wins), axis=0)


def _allclose(a, b, tol=1e-10):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=tol, atol=tol)


@pytest.mark.parametrize("k,s,d,hw", [(3, 1, 1, (8, 9)), (5, 1, 1, (8, 8)), (3, 2, 1, (8, 9)), (5, 2, 1, (9, 9)),
                                      (3, 1, 2, (7, 8)), (5, 2, 2, (8, 7))])
def test_depthwise_all_transformations(x64, k, s, d, hw):
    x = jax.random.normal(jax.random.key(0), (2, *hw, 3), jnp.float64)
    w = jax.random.normal(jax.random.key(1), (k, k, 3), jnp.float64)
    v = (jax.random.normal(jax.random.key(2), x.shape, jnp.float64),
         jax.random.normal(jax.random.key(3), w.shape, jnp.float64))
    mine = lambda x, w: jnp.sum(jnp.sin(kernels.depthwise_conv(x, w, s, d)))
    ref = lambda x, w: jnp.sum(jnp.sin(grouped_conv_depthwise(x, w, s, d)))
    _allclose(jax.jit(lambda x, w: kernels.depthwise_conv(x, w, s, d))(x, w), grouped_conv_depthwise(x, w, s, d))
    _allclose(jax.grad(mine, (0, 1))(x, w), jax.grad(ref, (0, 1))(x, w))
    # Hessian-vector product, forward-over-reverse (what hypergrad.hvp does) ...
    hvp = lambda f: jax.jvp(jax.grad(f, (0, 1)), (x, w), v)[1]
    _allclose(hvp(mine), hvp(ref))
    # ... and reverse-over-reverse (what the unrolled estimator does)
    gg = lambda f: jax.grad(lambda x, w: jnp.sum(jax.grad(f, (0, 1))(x, w)[1] ** 2), (0, 1))(x, w)
    _allclose(gg(mine), gg(ref))
    # vmap over edges with per-edge kernels (the supernet's batched edges), values and grads
    xs, ws = jnp.stack([x, 2 * x]), jnp.stack([w, -w])
    _allclose(jax.vmap(jax.grad(mine, (0, 1)))(xs, ws),
              [jnp.stack(a) for a in zip(jax.grad(ref, (0, 1))(x, w), jax.grad(ref, (0, 1))(2 * x, -w))])
    # vmap with a shared (unbatched) kernel
    _allclose(jax.vmap(lambda x: kernels.depthwise_conv(x, w, s, d))(xs)[1], grouped_conv_depthwise(2 * x, w, s, d))


def test_depthwise_backward_is_gather_form():
    """The point of the primitives: no slice transposes (pads) of the cotangent per tap."""
    x = jnp.ones((2, 8, 8, 3))
    w = jnp.ones((5, 5, 3))
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda x, w: jnp.sum(kernels.depthwise_conv(x, w) ** 2), (0, 1)))(x, w))
    assert "jaxdarts_depthwise_input_grad" in jaxpr and "jaxdarts_depthwise_kernel_grad" in jaxpr
    assert "pad" not in jaxpr.replace("jaxdarts", "")


@pytest.mark.parametrize("stride,hw", [(1, (8, 7)), (2, (8, 8)), (2, (7, 9))])
def test_max_pool(x64, stride, hw):
    x = jax.random.normal(jax.random.key(0), (2, *hw, 3), jnp.float64)
    _allclose(kernels.max_pool_3x3(x, stride), _ref_max_pool(x, stride))
    f = lambda p: (lambda x: jnp.sum(jnp.sin(p(x, stride)) * jnp.arange(1.0, 4.0)))
    _allclose(jax.grad(f(kernels.max_pool_3x3))(x), jax.grad(f(_ref_max_pool))(x))
    v = jax.random.normal(jax.random.key(1), x.shape, jnp.float64)
    hvp = lambda p: jax.jvp(jax.grad(f(p)), (x,), (v,))[1]
    _allclose(_stack_max_pool(x, stride), _ref_max_pool(x, stride))
    _allclose(hvp(kernels.max_pool_3x3), hvp(_stack_max_pool))
    xs = jnp.stack([x, -x])
    _allclose(jax.vmap(jax.grad(f(kernels.max_pool_3x3)))(xs)[1], jax.grad(f(_ref_max_pool))(-x))


def test_max_pool_ties_go_to_first_maximum():
    """PyTorch routes a tied window's gradient to its first maximum (row-major); plain
    ``jnp.maximum`` would split it."""
    x = jnp.zeros((1, 3, 3, 1))
    g = jax.grad(lambda x: kernels.max_pool_3x3(x, 2)[0, 0, 0, 0])(x)
    np.testing.assert_array_equal(np.asarray(g)[0, :, :, 0], [[1, 0, 0], [0, 0, 0], [0, 0, 0]])


@pytest.mark.parametrize("stride,hw", [(1, (8, 7)), (2, (7, 8))])
def test_avg_pool(x64, stride, hw):
    x = jax.random.normal(jax.random.key(0), (2, *hw, 3), jnp.float64)
    win = lambda a: lax.reduce_window(a, 0.0, lax.add, (1, 3, 3, 1), (1, stride, stride, 1),
                                      [(0, 0), (1, 1), (1, 1), (0, 0)])
    ref = lambda x, s: win(x) / win(jnp.ones_like(x))
    _allclose(kernels.avg_pool_3x3(x, stride), ref(x, stride))
    f = lambda p: (lambda x: jnp.sum(jnp.sin(p(x, stride))))
    _allclose(jax.grad(f(kernels.avg_pool_3x3))(x), jax.grad(f(ref))(x))
    _allclose(jax.vmap(jax.grad(f(kernels.avg_pool_3x3)))(jnp.stack([x, -x]))[1], jax.grad(f(ref))(-x))


def test_batch_chunk_is_the_largest_divisor_within_the_slab(monkeypatch):
    monkeypatch.setattr(kernels, "KERNEL_GRAD_SLAB", 100)
    assert kernels._batch_chunk(12, 30) == 3  # 4 * 30 > 100; 3 divides 12
    assert kernels._batch_chunk(7, 30) == 1  # prime batch: one sample per iteration
    assert kernels._batch_chunk(8, 200) == 1  # a sample larger than the slab still runs
    assert kernels._batch_chunk(6, 10) == 6  # everything fits: no loop


@pytest.mark.parametrize("k,s,d", [(3, 1, 1), (5, 2, 1), (3, 1, 2)])
def test_kernel_grad_cpu_loop(x64, monkeypatch, k, s, d):
    """The XLA:CPU lowering of the kernel gradient (a loop over slabs of the batch) equals
    the plain tap sums and the grouped-convolution reference, also vmapped over edges."""
    monkeypatch.setattr(kernels, "KERNEL_GRAD_SLAB", 2 * 8 * 9 * 3)  # 2 of the 6 samples per slab
    x = jax.random.normal(jax.random.key(0), (6, 8, 9, 3), jnp.float64)
    w = jax.random.normal(jax.random.key(1), (k, k, 3), jnp.float64)
    g = jax.random.normal(jax.random.key(2), kernels.depthwise_conv(x, w, s, d).shape, jnp.float64)
    bind = jax.jit(lambda x, g: kernels.depthwise_kernel_grad_p.bind(x, g, stride=s, dilation=d, ksize=k))
    if jax.default_backend() == "cpu":
        assert "while" in bind.lower(x, g).as_text()
    _allclose(bind(x, g), kernels._depthwise_kernel_grad_impl(x, g, stride=s, dilation=d, ksize=k))
    ref = jax.grad(lambda w: jnp.vdot(grouped_conv_depthwise(x, w, s, d), g))(w)
    _allclose(jax.jit(jax.grad(lambda w: jnp.vdot(kernels.depthwise_conv(x, w, s, d), g)))(w), ref)
    xs, gs = jnp.stack([x, -x]), jnp.stack([g, 2 * g])  # leading edge axis: 1 slab = 1 sample of 2 edges
    _allclose(jax.jit(jax.vmap(lambda x, g: kernels.depthwise_kernel_grad_p.bind(
        x, g, stride=s, dilation=d, ksize=k)))(xs, gs), jnp.stack([ref, -2 * ref]))


def test_materialize_is_the_identity_through_every_transformation(x64):
    x = jax.random.normal(jax.random.key(0), (2, 5, 3), jnp.float64)
    v = jax.random.normal(jax.random.key(1), x.shape, jnp.float64)
    f = lambda x: jnp.sum(jnp.sin(kernels.materialize(x * x)) ** 2)
    ref = lambda x: jnp.sum(jnp.sin(x * x) ** 2)
    _allclose(jax.jit(kernels.materialize)(x), x)
    _allclose(jax.jit(jax.grad(f))(x), jax.grad(ref)(x))
    _allclose(jax.jit(lambda x, v: jax.jvp(jax.grad(f), (x,), (v,))[1])(x, v), jax.jvp(jax.grad(ref), (x,), (v,))[1])
    _allclose(jax.jit(jax.grad(lambda x: jnp.sum(jax.grad(f)(x) ** 2)))(x),
              jax.grad(lambda x: jnp.sum(jax.grad(ref)(x) ** 2))(x))
    _allclose(jax.jit(jax.vmap(jax.grad(f)))(jnp.stack([x, v])), jnp.stack([jax.grad(ref)(x), jax.grad(ref)(v)]))
    assert kernels.materialize(jnp.zeros((0, 3))).shape == (0, 3)
    if jax.default_backend() == "cpu":  # the barrier survives XLA's loop simplification
        assert "while" in jax.jit(jax.grad(f)).lower(x).compile().as_text()


def _chain(ws, x, n, layer_fn):
    for i, w in enumerate(ws):
        x = layer_fn(w, x, i)
    return jnp.sum(jnp.sin(x) ** 2)


def _layer(w, x, i):  # i: an integer input (float0 cotangent)
    for _ in range(4):
        x = jnp.tanh(x * w + jnp.roll(x, 1, axis=-1) * (1.0 + 0.1 * i))
    return x


def test_remat_same_derivatives_through_every_transformation(x64):
    ws = [0.3 + 0.1 * jax.random.normal(jax.random.key(i), (6,), jnp.float64) for i in range(3)]
    x = jax.random.normal(jax.random.key(9), (4, 6), jnp.float64)
    layer = kernels.remat(_layer)
    f = lambda ws: _chain(ws, x, 3, layer)
    ref = lambda ws: _chain(ws, x, 3, _layer)
    _allclose(jax.jit(f)(ws), ref(ws))
    _allclose(jax.jit(jax.grad(f))(ws), jax.grad(ref)(ws))
    hv = lambda f: jax.jit(lambda ws, v: jax.jvp(jax.grad(f), (ws,), (v,))[1])(ws, ws)
    _allclose(hv(f), hv(ref))
    gg = lambda f: jax.jit(jax.grad(lambda ws: sum(jnp.sum(g ** 2) for g in jax.grad(f)(ws))))(ws)
    _allclose(gg(f), gg(ref))
    batched = [jnp.stack([w, -w]) for w in ws]
    _allclose(jax.jit(jax.vmap(jax.grad(f)))(batched), jax.vmap(jax.grad(ref))(batched))
    # derivative w.r.t. a checkpointed function's input as well as its parameters
    gx = lambda lf: jax.grad(lambda x: _chain(ws, x, 3, lf))(x)
    _allclose(jax.jit(lambda: gx(layer))(), gx(_layer))


def test_remat_saves_memory_on_cpu():
    """The backward keeps one layer's intermediates, not all of them (``jax.checkpoint`` does
    not achieve this on XLA:CPU, whose pipeline drops its optimisation barriers)."""
    if jax.default_backend() != "cpu":
        pytest.skip("the CPU lowering is what is under test")
    ws = [jnp.full((128,), 0.5 + 0.01 * i) for i in range(8)]
    x = jax.ShapeDtypeStruct((1024, 128), jnp.float32)
    temp = {}
    for name, lf in (("plain", _layer), ("remat", kernels.remat(_layer))):
        g = jax.jit(jax.grad(lambda ws, x: _chain(ws, x, 8, lf))).lower(ws, x).compile()
        temp[name] = g.memory_analysis().temp_size_in_bytes
    # plain: 8 layers x 4 saved activations of 512 KB; checkpointed: 8 inputs + one layer's
    assert temp["remat"] < 0.5 * temp["plain"], temp
