import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxdarts import analysis
from jaxdarts.methods import robustdarts as rdarts


pytestmark = pytest.mark.usefixtures("x64")  # float64 throughout (conftest)


def _loss():
    r = np.random.default_rng(0)
    A = jnp.asarray(r.normal(size=(30, 24)))

    def loss(alpha):
        z = jnp.concatenate([alpha["normal"].ravel(), alpha["reduce"].ravel()])
        return jnp.sum(jnp.log1p(jnp.exp(A @ z))) + 0.1 * jnp.sum(z ** 4) + 5e-4 * jnp.sum(z ** 2)

    alpha = {"normal": jnp.asarray(r.normal(size=(4, 3))), "reduce": jnp.asarray(r.normal(size=(4, 3)))}
    return loss, alpha


@pytest.mark.parametrize("chunk", [None, 5, 64])
def test_hessian_matches_jax_hessian(chunk):
    loss, alpha = _loss()
    flat, unravel = ravel_pytree(alpha)
    ref = jax.hessian(lambda z: loss(unravel(z)))(flat)
    np.testing.assert_allclose(analysis.hessian(loss, alpha, chunk), ref, rtol=1e-10, atol=1e-12)


def test_eigenvalues_dense_and_lanczos_against_numpy():
    loss, alpha = _loss()
    flat, unravel = ravel_pytree(alpha)
    ref = np.linalg.eigvalsh(np.asarray(jax.hessian(lambda z: loss(unravel(z)))(flat)))
    ref = ref[np.argsort(-np.abs(ref))]
    np.testing.assert_allclose(analysis.eigenvalues(loss, alpha, k=None), ref, rtol=1e-9)
    np.testing.assert_allclose(analysis.eigenvalues(loss, alpha, k=3), ref[:3], rtol=1e-9)
    np.testing.assert_allclose(analysis.eigenvalues(loss, alpha, k=2, which="largest"), np.sort(ref)[::-1][:2],
                               rtol=1e-9)
    lz = analysis.eigenvalues(loss, alpha, k=3, method="lanczos", num_iter=24)
    np.testing.assert_allclose(lz, ref[:3], rtol=1e-6)
    with pytest.raises(ValueError, match="unknown eigenvalue method 'power'; accepted: dense, lanczos"):
        analysis.eigenvalues(loss, alpha, method="power")


def test_lanczos_on_a_large_diagonal_problem():
    d = jnp.linspace(0.1, 1.0, 500).at[-3:].set(jnp.array([5.0, 7.0, 9.0]))
    loss = lambda a: 0.5 * jnp.sum(d * a["x"] ** 2)
    ev = analysis.eigenvalues(loss, {"x": jnp.ones(500)}, k=3, method="lanczos", num_iter=40)
    np.testing.assert_allclose(ev, [9.0, 7.0, 5.0], rtol=1e-6)


def _curve(values, every=1):
    return [(i * every + every - 1, v) for i, v in enumerate(values)]


def test_code_criterion_on_synthetic_curves():
    flat = _curve([0.1] * 20, every=2)
    assert rdarts.code_criterion(flat) is None
    # flat 0.1 then jumps to 0.5 from evaluation 10 on (epoch 21): the 5-window average
    # exceeds 1.3x its value 4 evaluations earlier at the first evaluation after the jump
    rising = _curve([0.1] * 10 + [0.5] * 10, every=2)
    stop, ret = rdarts.code_criterion(rising)
    assert (stop, ret) == (21, 13)
    # no stop before start_epoch even if the ratio is large
    early = _curve([0.1, 0.1, 0.1, 0.1, 0.1, 1.0, 1.0], every=1)
    assert rdarts.code_criterion(early, start_epoch=10) is None
    assert rdarts.code_criterion(early, start_epoch=0) == (5, 1)


def test_paper_criterion_on_synthetic_curves():
    assert rdarts.paper_criterion(_curve(list(np.linspace(0.1, 0.11, 30)))) is None
    vals = [0.1] * 10 + [0.2] * 10  # window means: 0.1 -> 0.2, ratio 0.5 < 0.75
    stop, ret = rdarts.paper_criterion(_curve(vals))
    assert ret == stop - 5
    # first i where mean(v[i-9:i-4]) / mean(v[i-4:i+1]) < 0.75: mean of last 5 includes 2 of 0.2
    now = lambda i: np.mean(vals[i - 4:i + 1])
    before = lambda i: np.mean(vals[i - 9:i - 4])
    expected = next(i for i in range(9, 20) if before(i) / now(i) < 0.75)
    assert stop == expected


@pytest.mark.parametrize("method", ["dense", "lanczos"])
def test_dominant_eigenvalue_is_the_largest_algebraic_one(method):
    """On {-5, -4, 1, 0.5, ...} the top eigenvalues by magnitude are negative; RobustDARTS's
    dominant eigenvalue is the maximum, 1 (the hook logged -4 before)."""
    from jaxdarts.hooks import dominant_eigenvalues

    d = jnp.array([-5.0, -4.0, 1.0] + [0.5 - 0.01 * i for i in range(27)])
    q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (30, 30)))
    H = (q * d) @ q.T  # the same spectrum in a rotated basis
    loss = lambda a: 0.5 * a["x"] @ H @ a["x"]
    top, by_mag = dominant_eigenvalues(loss, {"x": jnp.ones(30)}, topk=2, method=method, key=jax.random.key(1))
    np.testing.assert_allclose(top, 1.0, rtol=1e-4)
    np.testing.assert_allclose(by_mag, [-5.0, -4.0], rtol=1e-4)
