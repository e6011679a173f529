"""Small bilevel problems with closed-form solutions, for testing hypergradients.

:class:`RidgeProblem`: ``alpha`` sets per-feature L2 strengths ``exp(alpha_i)`` of the
training loss, the outer loss is validation MSE::

    L_train(w, alpha) = ||X w - y||^2 / (2n) + sum_i exp(alpha_i) w_i^2 / 2
    L_val(w, alpha)   = ||X_v w - y_v||^2 / (2m)
    w*(alpha) = H^-1 X^T y / n,   H = X^T X / n + diag(exp(alpha))
    d_alpha L_val(w*(alpha)) = -diag(exp(alpha) * w*) H^-1 v,   v = X_v^T (X_v w* - y_v) / m

(``g1 = 0``: the validation loss does not depend on alpha directly.) ``exact_*`` use
explicit matrices, independently of :mod:`jaxdarts.hypergrad`.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass
class RidgeProblem:
    X: jnp.ndarray
    y: jnp.ndarray
    Xv: jnp.ndarray
    yv: jnp.ndarray
    alpha: jnp.ndarray

    @classmethod
    def random(cls, seed: int, n: int = 20, m: int = 15, d: int = 6, correlated: bool = False,
               alpha_scale: float = 1.0, noise: float = 0.5) -> "RidgeProblem":
        """Gaussian features (``correlated``: mixed by a random matrix, so ``H`` is
        ill-conditioned), true weights N(0, 1), ``alpha ~ alpha_scale * N(0, 1)``."""
        r = np.random.default_rng(seed)
        L = r.normal(size=(d, d)) if correlated else np.eye(d)
        X, Xv = r.normal(size=(n, d)) @ L, r.normal(size=(m, d)) @ L
        wt = r.normal(size=d)
        y, yv = X @ wt + noise * r.normal(size=n), Xv @ wt + noise * r.normal(size=m)
        alpha = alpha_scale * r.normal(size=d)
        return cls(*(jnp.asarray(a) for a in (X, y, Xv, yv, alpha)))

    # losses with the jaxdarts signature loss(params, alpha, batch)
    def train_loss(self, w, alpha, batch=None):
        r = self.X @ w - self.y
        return 0.5 * jnp.mean(r ** 2) + 0.5 * jnp.sum(jnp.exp(alpha) * w ** 2)

    def val_loss(self, w, alpha, batch=None):
        r = self.Xv @ w - self.yv
        return 0.5 * jnp.mean(r ** 2)

    # closed forms
    def hessian(self, alpha=None):
        a = self.alpha if alpha is None else alpha
        return self.X.T @ self.X / self.X.shape[0] + jnp.diag(jnp.exp(a))

    def w_star(self, alpha=None):
        a = self.alpha if alpha is None else alpha
        return jnp.linalg.solve(self.hessian(a), self.X.T @ self.y / self.X.shape[0])

    def v(self, w):
        return self.Xv.T @ (self.Xv @ w - self.yv) / self.Xv.shape[0]

    def exact_hypergradient(self):
        w = self.w_star()
        return -(jnp.exp(self.alpha) * w) * jnp.linalg.solve(self.hessian(), self.v(w))

    def exact_amended_term(self, eta: float = 0.1):
        """Eq. 7 in closed form at w*: ``-eta * diag(exp(alpha) w*) H v``."""
        w = self.w_star()
        return -eta * (jnp.exp(self.alpha) * w) * (self.hessian() @ self.v(w))
