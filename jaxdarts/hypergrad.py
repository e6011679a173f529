"""Architecture-gradient (hypergradient) estimators for any bilevel problem.

Every estimator has the signature::

    estimator(train_loss, val_loss, params, alpha, train_batch, val_batch, **options)
        -> pytree shaped like alpha           (or (grad, aux) with has_aux=True)

with ``train_loss(params, alpha, batch) -> scalar`` and ``val_loss`` likewise; ``params``
and ``alpha`` are arbitrary pytrees. The bilevel problem is
``min_alpha L_val(w*(alpha), alpha)`` s.t. ``w*(alpha) = argmin_w L_train(w, alpha)``.

========================  =================================================================
``first_order``           ``g1 = d_alpha L_val(w, alpha)`` (DARTS first order)
``one_level``             ``d_alpha L_train(w, alpha)`` on the training batch (StacNAS)
``unrolled``              exact ``d_alpha L_val(w'(alpha), alpha)`` through ``inner_steps``
                          SGD(-momentum, weight-decay) steps (one step: its two terms,
                          ``g1 - lr * d2_{alpha,w} L_train . d_w L_val(w')``; more: ``jax.grad``
                          through the steps)
``finite_difference``     DARTS second order: the mixed term by central differences
``amended``               Amended-DARTS Eq. 7: ``g1 - eta * d2_{alpha,w} L_train . H . v``
``implicit``              implicit function theorem (Eq. 6), ``(H + damping I)^-1 v`` by
                          conjugate gradients or a truncated Neumann series
========================  =================================================================

(``v = d_w L_val``, ``H = d2_w L_train``.) No estimator materialises a matrix: second
derivatives enter through Hessian-vector products and mixed products
``d2_{alpha,w} L_train . u = d_alpha <d_w L_train(w, alpha), stop_gradient(u)>``, both
forward-over-reverse (``jax.jvp`` of ``jax.grad``). All are ``jit``-able.

With ``has_aux=True`` each returns ``(grad, aux)``; ``aux`` holds ``g1`` and the second
term ``g2`` (so ``grad = g1 + g2``) and, for ``implicit``, ``residual`` (relative
``||(H + damping I) q - v|| / ||v||``) of the linear solve.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from jaxdarts import kernels

Loss = Callable[[Any, Any, Any], jax.Array]


# ---------------------------------------------------------------- tree helpers
tree_dot = optax.tree.vdot
tree_norm = optax.tree.norm


def tree_axpy(a, x, y):
    """``a * x + y`` on pytrees."""
    return optax.tree.add_scale(y, a, x)


tree_scale = optax.tree.scale


def cosine(a, b) -> jax.Array:
    """Cosine similarity of two pytrees (0 when either is zero)."""
    den = tree_norm(a) * tree_norm(b)
    return jnp.where(den > 0, tree_dot(a, b) / jnp.where(den > 0, den, 1.0), 0.0)


# ------------------------------------------------------------- derivative ops
def hvp(loss: Loss, params, alpha, batch, v):
    """``d2_w loss(w, alpha, batch) . v`` (forward-over-reverse)."""
    grad_w = lambda p: jax.grad(loss)(p, alpha, batch)
    return jax.jvp(grad_w, (params,), (v,))[1]


def mixed_product(loss: Loss, params, alpha, batch, u):
    """``d2_{alpha,w} loss . u = d_alpha <d_w loss(w, alpha), u>`` (u held constant).

    Computed forward-over-reverse, as the derivative of ``d_alpha loss`` along ``u`` in
    ``w`` (the same number by symmetry of second derivatives): with a rematerialised
    network (``model.remat``) it keeps one cell's intermediates at a time, where
    reverse-over-reverse would keep every cell's backward pass."""
    u = jax.lax.stop_gradient(u)
    grad_alpha = lambda p: jax.grad(loss, argnums=1)(p, alpha, batch)
    return jax.jvp(grad_alpha, (params,), (u,))[1]


def sgd_step(loss: Loss, params, alpha, batch, lr, momentum: float = 0.0, momentum_buffer=None,
             weight_decay: float = 0.0):
    """One PyTorch-SGD step ``w - lr * (mu * buf + g + wd * w)``; returns ``(w', buf')``."""
    g = jax.grad(loss)(params, alpha, batch)
    d = jax.tree.map(lambda gi, wi: gi + weight_decay * wi, g, params)
    if momentum_buffer is not None and momentum:
        d = jax.tree.map(lambda di, bi: momentum * bi + di, d, momentum_buffer)
    return jax.tree.map(lambda wi, di: wi - lr * di, params, d), d


def _after(tree, dep):
    """``tree``, but computed only once ``dep`` (a pytree) is: makes XLA recompute what
    depends on it instead of sharing (and keeping alive) an identical earlier computation."""
    d = jax.tree.leaves(dep)[0]
    return jax.tree.map(lambda x: kernels.after(x, d), tree)


def _result(g1, g2, has_aux, **extra):
    g = jax.tree.map(jnp.add, g1, g2)
    if has_aux:
        return g, dict(g1=g1, g2=g2, **extra)
    return g


# ----------------------------------------------------------------- estimators
def first_order(train_loss, val_loss, params, alpha, train_batch, val_batch, *, has_aux=False, **_):
    """``d_alpha L_val(w, alpha)`` (DARTS first order)."""
    g1 = jax.grad(val_loss, argnums=1)(params, alpha, val_batch)
    return _result(g1, jax.tree.map(jnp.zeros_like, g1), has_aux)


def one_level(train_loss, val_loss, params, alpha, train_batch, val_batch, *, has_aux=False, **_):
    """``d_alpha L_train(w, alpha)`` on the training batch (one-level optimisation)."""
    g1 = jax.grad(train_loss, argnums=1)(params, alpha, train_batch)
    return _result(g1, jax.tree.map(jnp.zeros_like, g1), has_aux)


def unrolled(train_loss, val_loss, params, alpha, train_batch, val_batch, *, inner_lr, inner_steps: int = 1,
             momentum: float = 0.0, momentum_buffer=None, weight_decay: float = 0.0, recompute: bool = False,
             has_aux=False, **_):
    """Exact gradient of ``L_val(w'(alpha), alpha)`` where ``w'`` is ``inner_steps``
    SGD steps on ``L_train`` from ``params`` (DARTS's virtual step
    ``w - lr * (mu * buf + g + wd * w)``, all on ``train_batch``), by ``jax.grad``
    through the steps. ``g1`` in the aux is the direct term at ``w'``.

    With one inner step (DARTS) the same gradient is assembled from its two terms,
    ``g1 - lr * d2_{alpha,w} L_train(w) . d_w L_val(w')`` (``w'`` depends on ``alpha`` only
    through ``lr * d_w L_train``; momentum buffer and weight decay are constants), each
    one derivative pass plus one forward-over-reverse product: no reverse pass through a
    reverse pass, so a rematerialised network keeps one cell's intermediates at a time.

    ``recompute=True`` (set from ``model.remat`` by the search loop) makes the second
    derivative products recompute their forward and backward passes at ``w`` instead of
    letting XLA share them with an identical earlier pass (common-subexpression
    elimination, loop-invariant hoisting): sharing saves one pass but keeps every cell's
    intermediates alive until the product, which undoes rematerialisation."""
    if inner_steps == 1:
        w1, _ = sgd_step(train_loss, params, alpha, train_batch, inner_lr, momentum, momentum_buffer,
                         weight_decay)
        v, g1 = jax.grad(val_loss, argnums=(0, 1))(jax.lax.stop_gradient(w1), alpha, val_batch)
        w = _after(params, v) if recompute else params
        g2 = tree_scale(-inner_lr, mixed_product(train_loss, w, alpha, train_batch, v))
        return _result(g1, g2, has_aux)

    def outer(a):
        w, buf = params, momentum_buffer
        for _ in range(inner_steps):
            w, buf = sgd_step(train_loss, w, a, train_batch, inner_lr, momentum, buf, weight_decay)
        return w

    def val_at(a):
        return val_loss(outer(a), a, val_batch)

    g = jax.grad(val_at)(alpha)
    if not has_aux:
        return g
    w_prime = outer(alpha)
    g1 = jax.grad(val_loss, argnums=1)(w_prime, alpha, val_batch)
    return g, dict(g1=g1, g2=jax.tree.map(jnp.subtract, g, g1))


def finite_difference(train_loss, val_loss, params, alpha, train_batch, val_batch, *, inner_lr,
                      momentum: float = 0.0, momentum_buffer=None, weight_decay: float = 0.0, r: float = 0.01,
                      has_aux=False, **_):
    """DARTS second order (``architect.py``), bit for bit: virtual step ``w'``, then
    ``g = d_alpha L_val(w') - inner_lr * (d_alpha L_train(w+) - d_alpha L_train(w-)) / (2 eps)``
    with ``w± = w ± eps v``, ``v = d_w L_val(w')``, ``eps = r / ||v||``."""
    w_prime, _ = sgd_step(train_loss, params, alpha, train_batch, inner_lr, momentum, momentum_buffer,
                          weight_decay)
    v, g1 = jax.grad(val_loss, argnums=(0, 1))(w_prime, alpha, val_batch)
    eps = r / tree_norm(v)
    g_plus = jax.grad(train_loss, argnums=1)(tree_axpy(eps, v, params), alpha, train_batch)
    g_minus = jax.grad(train_loss, argnums=1)(tree_axpy(-eps, v, params), alpha, train_batch)
    g2 = jax.tree.map(lambda p, m: -inner_lr * (p - m) / (2 * eps), g_plus, g_minus)
    return _result(g1, g2, has_aux)


def amended(train_loss, val_loss, params, alpha, train_batch, val_batch, *, eta: float = 0.1,
            recompute: bool = False, has_aux=False, **_):
    """Amended-DARTS (Eq. 7): ``g1 + g2'`` with
    ``g2' = -eta * d2_{alpha,w} L_train . H . v``, one HVP and one mixed product at the
    current ``w``. ``recompute``: see :func:`unrolled`."""
    v, g1 = jax.grad(val_loss, argnums=(0, 1))(params, alpha, val_batch)
    u = hvp(train_loss, params, alpha, train_batch, v)
    w = _after(params, u) if recompute else params
    g2 = tree_scale(-eta, mixed_product(train_loss, w, alpha, train_batch, u))
    return _result(g1, g2, has_aux)


def inverse_hvp(train_loss, params, alpha, batch, v, *, solver: str = "cg", maxiter: int = 20,
                damping: float = 0.0, tol: float = 1e-10, neumann_scale: float = 0.01, recompute: bool = False):
    """Approximately solves ``(H + damping I) q = v``; returns ``(q, relative residual)``
    with the residual ``||v - (H + damping I) q|| / ||v||``.

    ``cg``: conjugate gradients on pytrees from ``q = 0`` for at most ``maxiter``
    iterations or until the residual is below ``tol`` (needs ``H + damping I`` positive
    definite; add damping on non-convex losses); the residual is CG's recursively updated
    one. ``neumann``: ``q = s * sum_{j<maxiter} (I - s (H + damping I))^j v`` with
    ``s = neumann_scale`` (converges when ``s * lambda_max < 2`` and ``H`` is positive
    definite); its residual is exactly the next term ``(I - s (H + damping I))^maxiter v``.

    Both run their Hessian-vector product inside one loop body, so the compiled program
    holds a single HVP (``jax.scipy.sparse.linalg.cg`` plus an explicit residual check
    held three, which on the supernet tripled compile time and memory).
    """
    def matvec(x):  # recompute: no loop-invariant primal pass hoisted out (and kept alive)
        w = _after(params, x) if recompute else params
        return tree_axpy(damping, x, hvp(train_loss, w, alpha, batch, x))

    vv = tree_dot(v, v)
    if solver == "cg":
        def cond(c):
            k, _, _, _, rr = c
            return (k < maxiter) & (rr > tol ** 2 * vv)

        def body(c):
            k, q, r, p, rr = c
            ap = matvec(p)
            step = rr / tree_dot(p, ap)
            q, r = tree_axpy(step, p, q), tree_axpy(-step, ap, r)
            rr_new = tree_dot(r, r)
            return k + 1, q, r, tree_axpy(rr_new / rr, p, r), rr_new

        zeros = jax.tree.map(jnp.zeros_like, v)
        _, q, _, _, rr = jax.lax.while_loop(cond, body, (0, zeros, v, v, vv))
    elif solver == "neumann":
        def body(_, carry):
            term, acc = carry
            acc = jax.tree.map(jnp.add, acc, term)
            return jax.tree.map(lambda t, ht: t - neumann_scale * ht, term, matvec(term)), acc

        term, acc = jax.lax.fori_loop(0, maxiter, body, (v, jax.tree.map(jnp.zeros_like, v)))
        q, rr = tree_scale(neumann_scale, acc), tree_dot(term, term)
    else:
        raise ValueError(f"unknown solver {solver!r}; accepted: cg, neumann")
    return q, jnp.sqrt(rr / jnp.maximum(vv, 1e-60))


def implicit(train_loss, val_loss, params, alpha, train_batch, val_batch, *, solver: str = "cg",
             maxiter: int = 20, damping: float = 0.0, tol: float = 1e-10, neumann_scale: float = 0.01,
             recompute: bool = False, has_aux=False, **_):
    """Implicit-function-theorem hypergradient (Amended-DARTS Eq. 6), exact at a
    stationary ``w``: ``g1 - d2_{alpha,w} L_train . (H + damping I)^-1 . v``.
    ``recompute``: see :func:`unrolled`."""
    v, g1 = jax.grad(val_loss, argnums=(0, 1))(params, alpha, val_batch)
    q, res = inverse_hvp(train_loss, params, alpha, train_batch, v, solver=solver, maxiter=maxiter,
                         damping=damping, tol=tol, neumann_scale=neumann_scale, recompute=recompute)
    w = _after(params, q) if recompute else params
    g2 = tree_scale(-1.0, mixed_product(train_loss, w, alpha, train_batch, q))
    return _result(g1, g2, has_aux, residual=res)


ESTIMATORS: dict[str, Callable] = {
    "first_order": first_order,
    "one_level": one_level,
    "unrolled": unrolled,
    "finite_difference": finite_difference,
    "amended": amended,
    "implicit": implicit,
}
NEEDS_INNER_STEP = frozenset({"unrolled", "finite_difference"})
"""Estimators that take ``inner_lr``/``momentum``/``weight_decay`` of the weight optimiser."""
TAKES_RECOMPUTE = frozenset({"unrolled", "amended", "implicit"})
"""Estimators with a ``recompute`` option (set from ``model.remat`` by the search loop)."""


def get(name: str) -> Callable:
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; accepted: {', '.join(ESTIMATORS)}")
    return ESTIMATORS[name]


def compare(estimators: Mapping[str, tuple[str | Callable, dict]] | list[str], train_loss, val_loss, params,
            alpha, train_batch, val_batch, *, reference: tuple[str | Callable, dict] = ("implicit", {})):
    """Cosine similarity and relative norm of each estimator against a reference.

    Args:
      estimators: ``{label: (name_or_fn, options)}`` or a list of names (no options).
      reference: ``(name_or_fn, options)``; defaults to ``implicit`` with CG.
    Returns:
      ``{label: {"cosine": c, "rel_norm": ||g|| / ||g_ref||}}`` (floats as jax scalars).
    """
    if isinstance(estimators, (list, tuple)):
        estimators = {n: (n, {}) for n in estimators}

    def call(spec):
        fn, opts = spec
        fn = get(fn) if isinstance(fn, str) else fn
        return fn(train_loss, val_loss, params, alpha, train_batch, val_batch, **opts)

    ref = call(reference)
    ref_norm = tree_norm(ref)
    out = {}
    for label, spec in estimators.items():
        g = call(spec)
        out[label] = {"cosine": cosine(g, ref), "rel_norm": tree_norm(g) / jnp.maximum(ref_norm, 1e-30)}
    return out
