"""Hypergradient estimators against independent computations (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxdarts import hypergrad
from jaxdarts.problems import RidgeProblem


pytestmark = pytest.mark.usefixtures("x64")  # float64 throughout (conftest)


def _nonlinear():
    """A tiny non-quadratic bilevel problem with pytree params/alpha."""
    r = np.random.default_rng(0)
    A, B, C = (jnp.asarray(r.normal(size=s)) for s in [(7, 5), (5, 3), (6, 5)])
    params = {"w": jnp.asarray(r.normal(size=5)), "b": jnp.asarray(r.normal(size=()))}
    alpha = {"a": jnp.asarray(r.normal(size=3)), "c": jnp.asarray(0.3)}

    def train_loss(p, a, batch):
        h = jnp.tanh(A @ p["w"] + p["b"]) * jax.nn.softplus(B @ a["a"]).sum()
        return jnp.mean((h - batch) ** 2) + jnp.exp(a["c"]) * jnp.sum(p["w"] ** 2)

    def val_loss(p, a, batch):
        return jnp.mean(jnp.sin(C @ p["w"] * a["a"].sum()) - batch) ** 2 + 0.1 * a["c"] ** 2

    return train_loss, val_loss, params, alpha, jnp.asarray(r.normal(size=7)), jnp.asarray(r.normal(size=6))


def _central_fd(f, alpha, h=1e-6):
    flat, unravel = ravel_pytree(alpha)
    g = np.zeros(flat.shape)
    for i in range(flat.size):
        e = jnp.zeros_like(flat).at[i].set(h)
        g[i] = (f(unravel(flat + e)) - f(unravel(flat - e))) / (2 * h)
    return g


@pytest.mark.parametrize("inner_steps,momentum,wd", [(1, 0.0, 0.0), (3, 0.9, 3e-4)])
def test_unrolled_matches_central_differences_of_outer_objective(inner_steps, momentum, wd):
    tl, vl, p, a, tb, vb = _nonlinear()
    buf = jax.tree.map(lambda x: 0.1 * jnp.ones_like(x), p) if momentum else None
    lr = 0.05

    def outer(alpha):
        w, b = p, buf
        for _ in range(inner_steps):
            g = jax.grad(tl)(w, alpha, tb)
            d = jax.tree.map(lambda gi, wi: gi + wd * wi, g, w)
            if b is not None:
                d = jax.tree.map(lambda di, bi: momentum * bi + di, d, b)
            w, b = jax.tree.map(lambda wi, di: wi - lr * di, w, d), d
        return vl(w, alpha, vb)

    g = hypergrad.unrolled(tl, vl, p, a, tb, vb, inner_lr=lr, inner_steps=inner_steps, momentum=momentum,
                           momentum_buffer=buf, weight_decay=wd)
    np.testing.assert_allclose(ravel_pytree(g)[0], _central_fd(outer, a), rtol=1e-6, atol=1e-9)


def test_finite_difference_agrees_with_unrolled_to_first_order_in_eps():
    tl, vl, p, a, tb, vb = _nonlinear()
    exact = ravel_pytree(hypergrad.unrolled(tl, vl, p, a, tb, vb, inner_lr=0.05))[0]
    errs = []
    for r in (1e-1, 1e-2):
        fd = ravel_pytree(hypergrad.finite_difference(tl, vl, p, a, tb, vb, inner_lr=0.05, r=r))[0]
        errs.append(float(jnp.linalg.norm(fd - exact) / jnp.linalg.norm(exact)))
    # DARTS's approximation differs from the exact unrolled gradient by O(inner_lr^2) terms
    # plus O(eps^2) differencing error: small, and not improved indefinitely by smaller eps.
    assert errs[1] < 0.05, errs


def test_finite_difference_is_darts_formula_bit_for_bit():
    tl, vl, p, a, tb, vb = _nonlinear()
    lr = 0.05
    w1 = jax.tree.map(lambda w, g: w - lr * g, p, jax.grad(tl)(p, a, tb))
    v, g1 = jax.grad(vl, argnums=(0, 1))(w1, a, vb)
    eps = 0.01 / jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(v)))
    gp = jax.grad(tl, 1)(jax.tree.map(lambda w, x: w + eps * x, p, v), a, tb)
    gm = jax.grad(tl, 1)(jax.tree.map(lambda w, x: w - eps * x, p, v), a, tb)
    ref = jax.tree.map(lambda g, x, y: g - lr * (x - y) / (2 * eps), g1, gp, gm)
    got = hypergrad.finite_difference(tl, vl, p, a, tb, vb, inner_lr=lr)
    np.testing.assert_allclose(ravel_pytree(got)[0], ravel_pytree(ref)[0], rtol=1e-12)


def test_first_order_and_one_level():
    tl, vl, p, a, tb, vb = _nonlinear()
    np.testing.assert_allclose(ravel_pytree(hypergrad.first_order(tl, vl, p, a, tb, vb))[0],
                               _central_fd(lambda x: vl(p, x, vb), a), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ravel_pytree(hypergrad.one_level(tl, vl, p, a, tb, vb))[0],
                               _central_fd(lambda x: tl(p, x, tb), a), rtol=1e-6, atol=1e-9)


def test_implicit_equals_exact_ridge_hypergradient_at_w_star():
    for seed in range(3):
        prob = RidgeProblem.random(seed)
        w = prob.w_star()
        exact = prob.exact_hypergradient()
        # independent check of the closed form: autodiff through the explicit solve
        np.testing.assert_allclose(jax.grad(lambda a: prob.val_loss(prob.w_star(a), a))(prob.alpha), exact,
                                   rtol=1e-10)
        for solver, opts in [("cg", dict(maxiter=50)), ("neumann", dict(maxiter=3000, neumann_scale=0.1))]:
            g, aux = hypergrad.implicit(prob.train_loss, prob.val_loss, w, prob.alpha, None, None, solver=solver,
                                        has_aux=True, **opts)
            np.testing.assert_allclose(g, exact, rtol=1e-5, atol=1e-12)
            assert float(aux["residual"]) < 1e-6


def test_inverse_hvp_reports_its_true_residual_when_not_converged():
    """The residual each solver reports (CG's recursive one, Neumann's next term) equals
    ``||v - H q|| / ||v||`` computed from an explicit Hessian."""
    prob = RidgeProblem.random(2)
    w = prob.w_star()
    H = jax.hessian(lambda w: prob.train_loss(w, prob.alpha, None))(w)
    v = jax.random.normal(jax.random.key(5), w.shape, w.dtype)
    for solver, opts in [("cg", dict(maxiter=2)), ("neumann", dict(maxiter=5, neumann_scale=0.1))]:
        q, res = hypergrad.inverse_hvp(prob.train_loss, w, prob.alpha, None, v, solver=solver, damping=0.3, **opts)
        true = np.linalg.norm(v - (H + 0.3 * np.eye(len(w))) @ q) / np.linalg.norm(v)
        assert 1e-4 < true < 1.0, (solver, true)  # not converged: the check means something
        np.testing.assert_allclose(float(res), true, rtol=1e-6)


def test_amended_term_matches_closed_form():
    prob = RidgeProblem.random(1)
    g, aux = hypergrad.amended(prob.train_loss, prob.val_loss, prob.w_star(), prob.alpha, None, None, eta=0.1,
                               has_aux=True)
    np.testing.assert_allclose(aux["g2"], prob.exact_amended_term(0.1), rtol=1e-10)
    np.testing.assert_allclose(aux["g1"], 0.0, atol=1e-15)
    np.testing.assert_allclose(g, aux["g2"], rtol=1e-12)


def _amended_cosine(prob):
    """Cosine between Amended-DARTS's estimate (``hypergrad.amended`` at w*) and the true
    hypergradient, differentiated through the exact solve w*(alpha) (L_val has no direct
    alpha term here, so the hypergradient is its second-order term g2)."""
    exact = jax.grad(lambda a: prob.val_loss(prob.w_star(a), a))(prob.alpha)
    approx, aux = hypergrad.amended(prob.train_loss, prob.val_loss, prob.w_star(), prob.alpha, None, None, eta=0.1,
                                    has_aux=True)
    assert float(jnp.abs(aux["g1"]).max()) == 0.0
    return float(exact @ approx / jnp.linalg.norm(exact) / jnp.linalg.norm(approx))


def test_amended_angle_claim_is_measured_not_assumed():
    """Eq. 8 claims <g2', g2> >= 0. H^-1 P H is similar to P but not symmetric, so the
    quadratic form can be negative. Measured (see benchmarks/RESULTS.md): always positive
    on well-conditioned random ridge problems, ~80% positive on ill-conditioned ones."""
    well = [_amended_cosine(RidgeProblem.random(s)) for s in range(50)]
    ill = [_amended_cosine(RidgeProblem.random(s, n=8, m=8, correlated=True, alpha_scale=3.0, noise=1.0))
           for s in range(100)]
    assert np.mean(np.array(well) > 0) > 0.9
    assert 0.5 < np.mean(np.array(ill) > 0) < 1.0
    # a pinned counterexample: the amended direction points away from the true g2
    c = _amended_cosine(RidgeProblem.random(3, n=8, m=8, correlated=True, alpha_scale=3.0, noise=1.0))
    assert c < -0.1, c


def test_hvp_and_mixed_product_against_explicit_matrices():
    tl, vl, p, a, tb, vb = _nonlinear()
    fp, unp = ravel_pytree(p)
    fa, una = ravel_pytree(a)
    f = lambda wp, ap: tl(unp(wp), una(ap), tb)
    H = jax.hessian(f, 0)(fp, fa)
    M = jax.jacfwd(jax.grad(f, 0), 1)(fp, fa)  # d/dalpha of grad_w: (n_w, n_alpha)
    v = jnp.arange(fp.size, dtype=fp.dtype) / fp.size
    np.testing.assert_allclose(ravel_pytree(hypergrad.hvp(tl, p, a, tb, unp(v)))[0], H @ v, rtol=1e-10)
    np.testing.assert_allclose(ravel_pytree(hypergrad.mixed_product(tl, p, a, tb, unp(v)))[0], M.T @ v, rtol=1e-10)
    # amended with explicit matrices
    vv = ravel_pytree(jax.grad(vl)(p, a, vb))[0]
    g1 = ravel_pytree(jax.grad(vl, 1)(p, a, vb))[0]
    ref = g1 - 0.1 * M.T @ (H @ vv)
    got = ravel_pytree(hypergrad.amended(tl, vl, p, a, tb, vb, eta=0.1))[0]
    np.testing.assert_allclose(got, ref, rtol=1e-10)


def test_compare_and_registry():
    prob = RidgeProblem.random(0)
    out = hypergrad.compare(["first_order", "amended"], prob.train_loss, prob.val_loss, prob.w_star(), prob.alpha,
                            None, None, reference=("implicit", {"maxiter": 50}))
    assert float(out["first_order"]["rel_norm"]) == 0.0
    np.testing.assert_allclose(float(out["amended"]["cosine"]), _amended_cosine(prob), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown estimator 'second'; accepted: first_order"):
        hypergrad.get("second")
    jitted = jax.jit(lambda w, a: hypergrad.implicit(prob.train_loss, prob.val_loss, w, a, None, None, maxiter=30))
    np.testing.assert_allclose(jitted(prob.w_star(), prob.alpha), prob.exact_hypergradient(), rtol=1e-5)


@pytest.mark.parametrize("name,opts", [("unrolled", dict(inner_lr=0.05, momentum=0.9, weight_decay=3e-4)),
                                       ("amended", dict(eta=0.1)),
                                       ("implicit", dict(maxiter=4, damping=5.0)),
                                       ("implicit", dict(solver="neumann", maxiter=4, damping=5.0))])
def test_recompute_changes_nothing_but_the_schedule(name, opts):
    """``recompute=True`` only adds data dependencies (``kernels.after``): same numbers,
    jitted, and through a ``vmap`` over architectures."""
    tl, vl, p, a, tb, vb = _nonlinear()
    if name == "unrolled":
        opts = dict(opts, momentum_buffer=jax.tree.map(lambda x: 0.1 * jnp.ones_like(x), p))
    est = hypergrad.get(name)
    ref = est(tl, vl, p, a, tb, vb, **opts)
    got = jax.jit(lambda a: est(tl, vl, p, a, tb, vb, recompute=True, **opts))(a)
    np.testing.assert_allclose(ravel_pytree(got)[0], ravel_pytree(ref)[0], rtol=1e-12, atol=1e-14)
    batched = jax.tree.map(lambda x: jnp.stack([x, 2 * x]), a)
    got2 = jax.jit(jax.vmap(lambda a: est(tl, vl, p, a, tb, vb, recompute=True, **opts)))(batched)
    ref2 = est(tl, vl, p, jax.tree.map(lambda x: 2 * x, a), tb, vb, **opts)
    np.testing.assert_allclose(ravel_pytree(jax.tree.map(lambda x: x[1], got2))[0], ravel_pytree(ref2)[0],
                               rtol=1e-10, atol=1e-12)
