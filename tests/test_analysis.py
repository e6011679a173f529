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


def _jump(at, low=0.1, high=0.5):
    return lambda e: low if e < at else high


CURVES = [("flat", lambda e: 0.1), ("late_rise", lambda e: 0.1 + 0.02 * max(0, e - 30)),
          ("noisy", lambda e: 0.1 + 0.05 * np.sin(1.7 * e) ** 2)] + \
    [(f"jump_at_{a}", _jump(a)) for a in (3, 10, 11, 14, 19, 27, 40, 47)] + \
    [("random_walk", lambda e, w=np.cumsum(np.random.default_rng(0).uniform(-0.05, 0.1, 60)): 0.5 + w[e])]
PARAMS = [dict(), dict(report_freq_hessian=1, window=3, delta=2, es_start_epoch=5, factor=1.2),
          dict(report_freq_hessian=3, window=4, delta=1, es_start_epoch=0, factor=1.1, epochs=40)]


@pytest.mark.parametrize("params", PARAMS, ids=["defaults", "every_epoch", "every_3"])
def test_code_rule_replays_the_reference_tracker(params):
    """``early_stop(record, 'code')`` against a line-by-line transcription of the reference's
    EVLocalAvg driven as train_search.py drives it, on curves with jumps at many epochs."""
    from reference import reference_darts_es

    fired = 0
    for name, curve in CURVES:
        record, expected = reference_darts_es(curve, **params)
        kw = dict(window=params.get("window", 5), ev_freq=params.get("report_freq_hessian", 2),
                  total_epochs=params.get("epochs", 50), factor=params.get("factor", 1.3),
                  delta=params.get("delta", 4), start_epoch=params.get("es_start_epoch", 10))
        assert rdarts.early_stop(record, "code", **kw) == expected, name
        # the record up to any epoch before the stop does not fire
        if expected is not None:
            fired += 1
            assert rdarts.early_stop([r for r in record if r[0] < expected[0]], "code", **kw) is None
    assert fired >= 4  # the curves exercise the rule


def test_code_rule_defaults_test_from_epoch_22_and_return_12_epochs_back():
    """Reference defaults (eigenvalues every 2 epochs): the local average at epoch e is
    attributed to e - 4 and compared with the one attributed to e - 12; the first test is
    at epoch 22 (18 vs 10 >= start epoch 10). A jump at epoch 16 fires there and returns
    epoch 10; a jump at epoch 8 is already inside both windows by then and never fires,
    though it would with start_epoch=0."""
    curve = lambda at: [(e, 0.1 if e < at else 1.0) for e in range(0, 49, 2)]
    assert rdarts.early_stop(curve(16), "code") == (22, 10)
    assert rdarts.early_stop(curve(8), "code") is None
    stop, ret = rdarts.early_stop(curve(8), "code", start_epoch=0)
    assert stop < 22 and ret == stop - 12
    stop, ret = rdarts.early_stop(curve(30), "code")
    assert ret == stop - 12 and stop >= 30


def test_paper_rule_smooths_over_epochs_around_i():
    """Section 4.2: lam(i) = mean over epochs i-2..i+2; stop when lam(i-5)/lam(i) < 0.75 and
    return epoch i-5. Hand-computed cases."""
    # every epoch, 1.0 before epoch 10 and 2.0 after: lam(8) = 1.2 (ratio .83), lam(9) = 1.4
    # (ratio .71 < .75), known at epoch 11 -> (11, 4)
    every = [(e, 1.0 if e < 10 else 2.0) for e in range(30)]
    assert rdarts.early_stop(every, "paper") == (11, 4)
    # every 2 epochs, 1.0 before epoch 10 and 3.0 after: lam(7) = mean(ev@6, ev@8) = 1 (ratio 1),
    # lam(8) = mean(ev@6, 8, 10) = 5/3 over lam(3) = mean(ev@2, 4) = 1: ratio .6, known at
    # epoch 10 -> (10, 3). Averaging 5 *evaluations* instead would wait for more 3.0s.
    sparse = [(e, 1.0 if e < 10 else 3.0) for e in range(0, 30, 2)]
    assert rdarts.early_stop(sparse, "paper") == (10, 3)
    assert rdarts.early_stop([(e, 1.0 + 0.001 * e) for e in range(40)], "paper") is None
    # threshold 0.5: lam(9) = mean(ev@8, 10) = 2 over lam(4) = 1 (ratio .5, not < .5); lam(10) =
    # mean(ev@8, 10, 12) = 7/3 over lam(5) = mean(ev@4, 6) = 1: ratio .43, known at epoch 12
    assert rdarts.early_stop(sparse, "paper", k=5, threshold=0.5) == (12, 5)
    with pytest.raises(ValueError, match="rule 'median' is not accepted; accepted: code, paper"):
        rdarts.early_stop(sparse, "median")


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
