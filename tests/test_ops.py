import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxdarts import kernels, ops

from reference import grouped_conv_depthwise


@pytest.mark.parametrize("k,d,s", [(3, 1, 1), (5, 1, 2), (3, 2, 1), (5, 2, 2), (3, 1, 2)])
def test_depthwise_taps_equals_grouped_conv(k, d, s):
    x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3))
    w = jax.random.normal(jax.random.key(1), (k, k, 3))
    np.testing.assert_allclose(ops.depthwise_conv(x, w, s, d), grouped_conv_depthwise(x, w, s, d), atol=1e-5)
    f = lambda fn: (lambda x, w: jnp.sum(jnp.sin(fn(x, w, s, d))))
    g1 = jax.grad(f(ops.depthwise_conv), (0, 1))(x, w)
    g2 = jax.grad(f(grouped_conv_depthwise), (0, 1))(x, w)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("stride", [1, 2])
def test_pools_match_reference(stride):
    x = jax.random.normal(jax.random.key(0), (2, 8, 7, 3))
    mx = lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, stride, stride, 1), [(0, 0), (1, 1), (1, 1), (0, 0)])
    np.testing.assert_allclose(ops.max_pool_3x3(x, stride), mx)
    s = lax.reduce_window(x, 0.0, lax.add, (1, 3, 3, 1), (1, stride, stride, 1), [(0, 0), (1, 1), (1, 1), (0, 0)])
    cnt = lax.reduce_window(jnp.ones_like(x), 0.0, lax.add, (1, 3, 3, 1), (1, stride, stride, 1),
                            [(0, 0), (1, 1), (1, 1), (0, 0)])
    np.testing.assert_allclose(ops.avg_pool_3x3(x, stride), s / cnt, atol=1e-6)
    # corner of a stride-1 avg pool averages 4 pixels, not 9 (count_include_pad=False)
    if stride == 1:
        np.testing.assert_allclose(ops.avg_pool_3x3(x, 1)[:, 0, 0], x[:, :2, :2].mean((1, 2)), atol=1e-6)


@pytest.mark.parametrize("stride,hw", [(1, (8, 7)), (2, (7, 8)), (2, (8, 8))])
def test_native_pools_equal_tap_pools(x64, stride, hw):
    """The 'conv' lowering's reduce_window pools equal the tap primitives in value,
    gradient and Hessian-vector product (float64, CPU)."""
    x = jax.random.normal(jax.random.key(0), (2, *hw, 3), jnp.float64)
    v = jax.random.normal(jax.random.key(1), x.shape, jnp.float64)
    for native, taps in ((ops.native_max_pool_3x3, ops.max_pool_3x3), (ops.native_avg_pool_3x3, ops.avg_pool_3x3)):
        f = lambda p: (lambda x: jnp.sum(jnp.sin(p(x, stride)) * jnp.arange(1.0, 4.0)))
        np.testing.assert_allclose(native(x, stride), taps(x, stride), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(jax.grad(f(native))(x), jax.grad(f(taps))(x), rtol=1e-12, atol=1e-12)
        hvp = lambda p: jax.jvp(jax.grad(f(p)), (x,), (v,))[1]
        np.testing.assert_allclose(hvp(native), hvp(taps), rtol=1e-10, atol=1e-10)


def test_native_max_pool_ties_go_to_first_maximum():
    g = jax.grad(lambda x: ops.native_max_pool_3x3(x, 2)[0, 0, 0, 0])(jnp.zeros((1, 3, 3, 1)))
    np.testing.assert_array_equal(np.asarray(g)[0, :, :, 0], [[1, 0, 0], [0, 0, 0], [0, 0, 0]])


def test_avg_pool_count_counts_in_image_pixels():
    for h, w, s in ((8, 7, 1), (7, 8, 2), (5, 5, 2)):
        ones = jnp.ones((1, h, w, 1))
        direct = lax.reduce_window(ones, 0.0, lax.add, (1, 3, 3, 1), (1, s, s, 1), [(0, 0), (1, 1), (1, 1), (0, 0)])
        np.testing.assert_array_equal(ops.kernels.avg_pool_count(h, w, s), np.asarray(direct)[0, :, :, 0])


def test_final_bn_is_left_out_only_where_parameter_free():
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 4)) * 3 + 1
    for name, stride in (("sep_conv_3x3", 1), ("dil_conv_5x5", 2), ("max_pool_3x3", 1), ("avg_pool_3x3", 2),
                         ("skip_connect", 2)):
        full, raw = ops.make_op(name, 4, 4, stride, False), ops.make_op(name, 4, 4, stride, False, final_bn=False)
        v = full.init(jax.random.key(1), x, True)
        y = full.apply(v, x, True, mutable=["batch_stats"])[0]
        r = raw.apply(v, x, True, mutable=["batch_stats"])[0]
        mu, var = r.mean((0, 1, 2)), r.var((0, 1, 2))
        np.testing.assert_allclose(y, (r - mu) / jnp.sqrt(var + 1e-5), rtol=1e-4, atol=1e-4)
    for name, stride, affine in (("skip_connect", 1, False), ("sep_conv_3x3", 1, True), ("noise", 1, False)):
        with pytest.raises(ValueError, match=name):
            ops.make_op(name, 4, 4, stride, affine, final_bn=False)


@pytest.mark.parametrize("name", ops.OP_NAMES)
@pytest.mark.parametrize("stride", [1, 2])
def test_op_shapes(name, stride):
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
    family = "nb201" if name.startswith("nor_") else "darts"
    for affine in (False, True):
        m = ops.make_op(name, 4, 4, stride, affine, family)
        v = m.init({"params": jax.random.key(1), "noise": jax.random.key(2)}, x, False)
        y = m.apply(v, x, True, mutable=["batch_stats"], rngs={"noise": jax.random.key(3)})[0]
        assert y.shape == (2, 8 // stride, 8 // stride, 4), (name, stride)


def test_parameter_counts_of_ops():
    # sep_conv_3x3 at C=16: 2 * (9*16 + 16*16) = 800 (affine-free BN); dil_conv_5x5: 25*16 + 256
    x = jnp.zeros((1, 8, 8, 16))
    count = lambda m: sum(p.size for p in jax.tree.leaves(m.init(jax.random.key(0), x, False).get("params", {})))
    assert count(ops.make_op("sep_conv_3x3", 16, 16, 1, False)) == 800
    assert count(ops.make_op("dil_conv_5x5", 16, 16, 1, False)) == 25 * 16 + 256
    assert count(ops.make_op("sep_conv_3x3", 16, 16, 1, True)) == 800 + 4 * 16  # two affine BNs
    assert count(ops.make_op("skip_connect", 16, 16, 2, False)) == 2 * 16 * 8
    assert count(ops.make_op("max_pool_3x3", 16, 16, 1, False)) == 0


def test_factorized_reduce_odd_sizes():
    m = ops.FactorizedReduce(6, affine=False)
    x = jnp.ones((2, 7, 7, 4))
    v = m.init(jax.random.key(0), x, False)
    assert m.apply(v, x, False).shape == (2, 4, 4, 6)


def test_noise_op_is_independent_of_input_and_standard_normal():
    m = ops.make_op("noise", 8, 8, 2, False)
    x1 = jnp.zeros((64, 16, 16, 8))
    x2 = 100.0 * jnp.ones((64, 16, 16, 8))
    y1 = m.apply({}, x1, True, rngs={"noise": jax.random.key(5)})
    y2 = m.apply({}, x2, True, rngs={"noise": jax.random.key(5)})
    assert y1.shape == (64, 8, 8, 8)
    np.testing.assert_array_equal(y1, y2)
    assert abs(float(y1.mean())) < 0.02 and abs(float(y1.std()) - 1) < 0.02


def test_unknown_op_names_accepted_values():
    with pytest.raises(ValueError, match="unknown op 'sep_conv_9x9'.*sep_conv_3x3"):
        ops.make_op("sep_conv_9x9", 4, 4, 1, False)
    with pytest.raises(ValueError, match="unknown lowering 'fft'; accepted: taps, conv, auto"):
        kernels.resolve_lowering("fft")
    # CPU-tuned primitives on CPU, XLA's own ops elsewhere
    assert kernels.resolve_lowering("auto", "cpu") == "taps"
    assert kernels.resolve_lowering("auto", "gpu") == kernels.resolve_lowering("auto", "tpu") == "conv"
    assert kernels.resolve_lowering("conv", "cpu") == "conv"


@pytest.mark.parametrize("axis,affine,train", [(-1, False, True), (-1, True, True), ((0, -1), False, True),
                                               ((0, -1), True, False)])
def test_batch_norm_with_closed_form_derivative_equals_flax_batch_norm(x64, axis, affine, train):
    """ops.BatchNorm (closed-form jvp) against Flax's nn.BatchNorm differentiated op by op:
    variables, output, running statistics and their tangents, gradients in x and in the
    parameters, a Hessian-vector product (jvp of grad), vmap over a leading axis, and central
    differences of the loss along one direction."""
    from flax import linen as nn

    x = jax.random.normal(jax.random.key(0), (3, 4, 5, 5, 6), jnp.float64) * 2 + 1
    flax_bn = nn.BatchNorm(use_running_average=not train, axis=axis, momentum=ops.BN_MOMENTUM, epsilon=1e-5,
                           use_scale=affine, use_bias=affine)
    ours = ops.BatchNorm(use_running_average=not train, axis=axis, use_scale=affine, use_bias=affine)
    v0 = flax_bn.init(jax.random.key(1), x)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), ours.init(jax.random.key(1), x)) == \
        jax.tree.map(lambda a: (a.shape, a.dtype), v0)
    v = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(5), a.shape, a.dtype), v0)
    w = jnp.sin(jnp.arange(x.size, dtype=jnp.float64)).reshape(x.shape)

    def loss(m):
        def f(p, x):
            y, upd = m.apply({**v, "params": p} if affine else v, x, mutable=["batch_stats"])
            return jnp.sum(jnp.tanh(y) * w), upd
        return f

    p = v.get("params", {})
    (a, ua), (b, ub) = loss(ours)(p, x), loss(flax_bn)(p, x)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    jax.tree.map(lambda s, t: np.testing.assert_allclose(s, t, rtol=1e-12), ua, ub)
    grads = lambda m: jax.grad(lambda p, x: loss(m)(p, x)[0], argnums=(0, 1))(p, x)
    jax.tree.map(lambda s, t: np.testing.assert_allclose(s, t, rtol=1e-9, atol=1e-12), grads(ours), grads(flax_bn))
    t = jax.random.normal(jax.random.key(9), x.shape, x.dtype)
    hvp = lambda m: jax.jvp(lambda x: jax.grad(lambda x: loss(m)(p, x)[0])(x), (x,), (t,))[1]
    np.testing.assert_allclose(hvp(ours), hvp(flax_bn), rtol=1e-8, atol=1e-11)
    stats_jvp = lambda m: jax.jvp(lambda x: loss(m)(p, x)[1], (x,), (t,))[1]  # running statistics' tangents
    jax.tree.map(lambda s, u: np.testing.assert_allclose(s, u, rtol=1e-9, atol=1e-12), stats_jvp(ours),
                 stats_jvp(flax_bn))
    f = lambda x: loss(ours)(p, x)[0]
    fd = (f(x + 1e-6 * t) - f(x - 1e-6 * t)) / 2e-6
    np.testing.assert_allclose(jnp.vdot(jax.grad(f)(x), t), fd, rtol=1e-6)
    batched = jax.vmap(lambda x: ours.apply(v, x, mutable=["batch_stats"])[0])(jnp.stack([x, 2 * x + 1]))
    np.testing.assert_allclose(batched[1], ours.apply(v, 2 * x + 1, mutable=["batch_stats"])[0], rtol=1e-12)
