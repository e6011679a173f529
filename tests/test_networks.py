import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdarts import NetworkCIFAR, NetworkImageNet, count_params, genotype, spaces
from jaxdarts.networks import EvalCell
from jaxdarts.supernet import count_params_excluding


def _shapes(model, x, **kw):
    return jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, **kw))


def test_darts_v2_cifar_parameter_counts():
    v = _shapes(NetworkCIFAR(genotype.DARTS_V2, C=36, layers=20, auxiliary=True), jnp.zeros((2, 32, 32, 3)), train=True)
    assert count_params_excluding(v["params"], "aux_head") == 3_349_342
    assert count_params(v["params"]["aux_head"]) == 476_426


def test_darts_v2_imagenet_parameter_count():
    v = _shapes(NetworkImageNet(genotype.DARTS_V2), jnp.zeros((1, 224, 224, 3)), train=False)
    assert count_params(v["params"]) == 4_718_752  # the reference prints "param size = 4.718752MB"


def test_classifier_initialised_as_torch_linear():
    """nn.Linear's default init (torch.nn.Linear.reset_parameters): weight and bias both
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)); Flax's Dense would start the bias at 0."""
    import flax.linen as nn

    from jaxdarts import ops

    fan_in, out = 64, 20_000

    class Head(nn.Module):
        @nn.compact
        def __call__(self, x):
            return ops.torch_dense(x, out, "classifier")

    p = Head().init(jax.random.key(0), jnp.zeros((1, fan_in)))["params"]["classifier"]
    bound = 1 / np.sqrt(fan_in)
    for name in ("kernel", "bias"):
        v = np.asarray(p[name]).ravel()
        assert np.abs(v).max() <= bound and np.abs(v).max() > 0.99 * bound, name
        assert np.std(v) == pytest.approx(bound / np.sqrt(3), rel=0.03), name  # std of U(-b, b)
        assert abs(np.mean(v)) < 0.03 * bound, name
    # the models use it: the supernet's classifier and the auxiliary head's
    from jaxdarts import Supernet, init_alpha
    from jaxdarts.supernet import AuxiliaryHeadCIFAR

    space = spaces.get("s2")
    sup = Supernet(space, num_classes=10, C=4, layers=2)
    sv = sup.init(jax.random.key(0), jnp.zeros((2, 8, 8, 3)), init_alpha(space, jax.random.key(1)), train=False)
    aux = AuxiliaryHeadCIFAR(10).init(jax.random.key(0), jnp.zeros((2, 8, 8, 16)))
    for head in (sv["params"]["classifier"], aux["params"]["Dense_0"]):
        b, k = np.asarray(head["bias"]), np.asarray(head["kernel"])
        assert np.all(b != 0) and np.abs(b).max() <= 1 / np.sqrt(k.shape[0])


@pytest.mark.slow
def test_tiny_network_forward_aux_and_drop_path():
    model = NetworkCIFAR(genotype.DARTS_V2, C=4, layers=5, auxiliary=True)
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))  # the aux head needs 8x8 maps (32px input)
    v = jax.jit(lambda x: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=True))(x)
    fwd = jax.jit(lambda v, x, k, p: model.apply(v, x, train=True, drop_prob=p, rngs={"dropout": k},
                                                 mutable=["batch_stats"])[0])
    logits, aux = fwd(v, x, jax.random.key(2), 0.0)
    assert logits.shape == (4, 10) and aux.shape == (4, 10)
    l2, _ = fwd(v, x, jax.random.key(2), 0.5)
    assert not np.allclose(logits, l2)
    assert model.apply(v, x, train=False).shape == (4, 10)


def test_drop_path_never_touches_identity_ops():
    g = genotype.Genotype(normal=[("skip_connect", 0), ("skip_connect", 1)] * 4,
                          reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1)] * 4)
    cell = EvalCell(g.normal, g.normal_concat, 4, False, False, True)
    x = jax.random.normal(jax.random.key(0), (8, 8, 8, 4))
    v = cell.init(jax.random.key(1), x, x)
    run = lambda p: cell.apply(v, x, x, p, rngs={"dropout": jax.random.key(3)}, mutable=["batch_stats"])[0]
    np.testing.assert_allclose(run(0.9), run(0.0))
    cell_p = EvalCell(g.reduce, g.reduce_concat, 4, False, False, True)
    vp = cell_p.init(jax.random.key(1), x, x)
    runp = lambda p: cell_p.apply(vp, x, x, p, rngs={"dropout": jax.random.key(3)}, mutable=["batch_stats"])[0]
    assert not np.allclose(runp(0.9), runp(0.0))


def test_per_cell_genotype_builds_matching_network():
    sp = spaces.get("amended_s2")
    alpha = {k: jax.random.normal(jax.random.key(i), s) for i, (k, s) in enumerate(sp.alpha_shapes().items())}
    g = genotype.derive(sp, alpha)
    model = NetworkCIFAR(g, C=4, layers=20, auxiliary=False)
    v = _shapes(model, jnp.zeros((1, 16, 16, 3)), train=False)
    # each cell's sep_conv count in the genotype shows up as its own parameters
    for i, ctype_idx in [(0, 0), (5, 5)]:
        gene = g.normal[ctype_idx]
        n_sep = sum(op == "sep_conv_3x3" for op, _ in gene)
        cell = v["params"][f"cell_{i}"]
        assert sum(k.endswith("sep_conv_3x3") for k in cell) == n_sep
