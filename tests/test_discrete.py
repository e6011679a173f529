"""Discrete networks (jaxdarts.discrete) against the one-hot search supernet."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdarts
from jaxdarts import discrete, spaces

EYE3, EYE2 = np.eye(3), np.eye(2)
CASES = {
    # S5 (the ground truth's space): three op types
    "s5_mixed": ("s5", {"normal": EYE3[[0, 2]], "reduce": EYE3[[1, 0]]}),
    # a derived DARTS-macro cell: node 1 keeps 2 of its 3 inputs (edge 2 dropped)
    "tiny_top2": ("tiny", {"normal": np.stack([EYE2[1], EYE2[0], 0 * EYE2[0], EYE2[1], EYE2[1]]),
                           "reduce": np.stack([EYE2[0], EYE2[1], 0 * EYE2[0], EYE2[0], EYE2[1]])}),
}


def _loss(model, variables, x, y, w):
    logits, mut = model.apply(variables, x, w, train=True, normalized=True, mutable=["batch_stats"])
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y)), y]), (logits, mut["batch_stats"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_discrete_network_is_the_one_hot_supernet(case, x64):
    """Same training loss, logits, BatchNorm statistics, weight gradients (of the chosen
    ops, mapped edge by edge) and eval logits as the search supernet at the one-hot alpha,
    in float64, with fewer parameters; the unchosen ops of the supernet do not matter."""
    name, alpha_np = CASES[case]
    full = spaces.get(name)
    alpha = {t: jnp.asarray(v, jnp.float64) for t, v in alpha_np.items()}
    ds = discrete.discrete_space(full, alpha)
    assert discrete.discrete_space(full, alpha) is ds  # registered once, found again
    x = jax.random.normal(jax.random.key(1), (6, 8, 8, 1), jnp.float64)
    y = jnp.arange(6) % 10
    mf, md = (jaxdarts.Supernet(s, num_classes=10, C=4, layers=3) for s in (full, ds))
    vf = jax.tree.map(lambda a: a.astype(jnp.float64),
                      mf.init(jax.random.key(2), x, alpha, train=False, normalized=True))
    wd = jax.tree.map(lambda a: a.astype(jnp.float64), discrete.unit_weights(ds))
    template = jax.eval_shape(lambda: md.init(jax.random.key(2), x, wd, train=False, normalized=True))
    vd = discrete.inherit(vf, template, full, ds)
    n = lambda v: sum(a.size for a in jax.tree.leaves(v["params"]))  # noqa: E731
    assert n(vd) < n(vf)

    (lf, (logf, bsf)), gf = jax.jit(jax.value_and_grad(
        lambda p: _loss(mf, {**vf, "params": p}, x, y, alpha), has_aux=True))(vf["params"])
    (ld, (logd, bsd)), gd = jax.jit(jax.value_and_grad(
        lambda p: _loss(md, {**vd, "params": p}, x, y, wd), has_aux=True))(vd["params"])
    np.testing.assert_allclose(ld, lf, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(logd, logf, rtol=1e-10, atol=1e-12)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)  # noqa: E731
    jax.tree.map(close, gd, discrete.inherit({"params": gf}, {"params": gd}, full, ds)["params"])
    jax.tree.map(close, bsd, discrete.inherit({"batch_stats": bsf}, {"batch_stats": bsd}, full, ds)["batch_stats"])
    ev = lambda m, v, w: jax.jit(lambda: m.apply(v, x, w, train=False, normalized=True))()  # noqa: E731
    close(ev(md, vd, wd), ev(mf, vf, alpha))

    # a wrong choice gives another function (the check above is not vacuous)
    other = {t: np.roll(v, 1, axis=1) if t == "normal" else v for t, v in alpha_np.items()}
    lo = jax.jit(lambda w: _loss(mf, vf, x, y, w)[0])({t: jnp.asarray(v, jnp.float64) for t, v in other.items()})
    assert abs(float(lo) - float(lf)) > 1e-6


def test_discrete_space_names_and_refusals():
    ds = discrete.discrete_space("s5", {"normal": EYE3[[0, 1]], "reduce": EYE3[[2, 2]]})
    assert ds.name == "s5[sep_conv_3x3@0.0,skip_connect@0.1|max_pool_3x3@0.0,max_pool_3x3@0.1]"
    assert ds.ops["normal"] == (("sep_conv_3x3",), ("skip_connect",)) and ds.edges == spaces.S5_EDGES
    with pytest.raises(ValueError, match="same kept edges"):
        discrete.discrete_space("s5", {"normal": np.stack([EYE3[0], 0 * EYE3[0]]), "reduce": EYE3[[2, 2]]})
