"""Curvature of a loss w.r.t. the architecture, and the discretisation gap.

* :func:`hessian` — the dense Hessian of a scalar loss w.r.t. the flattened alpha pytree,
  from ``vmap``-ed Hessian-vector products (forward-over-reverse) in chunks of
  ``chunk_size`` basis vectors (memory ~ chunk_size HVPs). For the DARTS space this is
  the 224x224 matrix RobustDARTS computes.
* :func:`eigenvalues` — the k eigenvalues of largest magnitude (decreasing magnitude),
  ``method="dense"`` (``eigh`` of the symmetrised Hessian) or ``"lanczos"`` (Lanczos with
  full re-orthogonalisation on HVPs; for per-cell spaces with thousands of entries).
* :func:`discretization_gap` — accuracy of the supernet with the derived one-hot alpha vs
  the continuous alpha, with the supernet's weights (RobustDARTS Section 6).
* StacNAS analyses: :func:`op_outputs` (each candidate op's output on an edge before
  mixing), :class:`PooledCorrelation` / :func:`operator_correlation` (Appendix B: pooled
  Pearson correlation between ops over samples and positions, streamed in bounded
  memory), :func:`gradient_confusion` (Eq. 7-8).
"""

from __future__ import annotations

from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxdarts import genotype as genotype_lib
from jaxdarts import spaces as spaces_lib
from jaxdarts import supernet as supernet_lib


def _flat(loss_fn: Callable, alpha):
    flat, unravel = ravel_pytree(alpha)
    return (lambda x: loss_fn(unravel(x))), flat


def hvp_fn(loss_fn: Callable, alpha):
    """``v -> H v`` on the flattened alpha (forward-over-reverse)."""
    f, flat = _flat(loss_fn, alpha)
    g = jax.grad(f)
    return lambda v: jax.jvp(g, (flat,), (v,))[1], flat.size


def hessian(loss_fn: Callable, alpha, chunk_size: int | None = 64) -> jax.Array:
    """Dense ``(n, n)`` Hessian of ``loss_fn(alpha)`` w.r.t. the flattened alpha."""
    hv, n = hvp_fn(loss_fn, alpha)
    eye = jnp.eye(n, dtype=ravel_pytree(alpha)[0].dtype)
    if not chunk_size or chunk_size >= n:
        return jax.vmap(hv)(eye)
    pad = (-n) % chunk_size
    basis = jnp.concatenate([eye, jnp.zeros((pad, n), eye.dtype)]).reshape(-1, chunk_size, n)
    rows = jax.lax.map(jax.vmap(hv), basis).reshape(-1, n)[:n]
    return rows  # row i = H e_i = column i (H symmetric up to rounding)


def _top_by_magnitude(ev: jax.Array, k: int | None) -> jax.Array:
    order = jnp.argsort(-jnp.abs(ev))
    ev = ev[order]
    return ev if k is None else ev[:k]


def lanczos(matvec: Callable, n: int, num_iter: int, key, dtype=jnp.float32):
    """Lanczos tridiagonalisation with full re-orthogonalisation; returns Ritz values."""
    m = min(num_iter, n)
    v0 = jax.random.normal(key, (n,), dtype)
    v0 = v0 / jnp.linalg.norm(v0)
    V = jnp.zeros((m + 1, n), dtype).at[0].set(v0)
    alphas = jnp.zeros((m,), dtype)
    betas = jnp.zeros((m,), dtype)

    def body(i, carry):
        V, alphas, betas = carry
        w = matvec(V[i])
        a = jnp.vdot(w, V[i])
        w = w - a * V[i] - jnp.where(i > 0, betas[i - 1], 0.0) * V[jnp.maximum(i - 1, 0)]
        mask = (jnp.arange(m + 1) <= i)[:, None]
        w = w - (V * mask).T @ ((V * mask) @ w)  # full re-orthogonalisation (twice is enough)
        w = w - (V * mask).T @ ((V * mask) @ w)
        b = jnp.linalg.norm(w)
        V = V.at[i + 1].set(jnp.where(b > 1e-10, w / jnp.maximum(b, 1e-30), 0.0))
        return V, alphas.at[i].set(a), betas.at[i].set(b)

    V, alphas, betas = jax.lax.fori_loop(0, m, body, (V, alphas, betas))
    T = jnp.diag(alphas) + jnp.diag(betas[:-1], 1) + jnp.diag(betas[:-1], -1)
    return jnp.linalg.eigvalsh(T)


def eigenvalues(loss_fn: Callable, alpha, k: int | None = 1, method: str = "dense", *, chunk_size: int = 64,
                num_iter: int | None = None, key=None, which: str = "magnitude") -> jax.Array:
    """Eigenvalues of ``d2 loss / d alpha^2``.

    ``which="magnitude"`` (default): the k of largest magnitude, in decreasing magnitude;
    ``which="largest"``: the k algebraically largest, decreasing (RobustDARTS's
    "dominant eigenvalue" is the maximum eigenvalue). ``k=None`` with
    ``method="dense"`` returns the whole spectrum. ``"lanczos"`` runs ``num_iter``
    (default ``max(3k, 40)``) iterations from a random start (``key``).
    """
    if which not in ("magnitude", "largest"):
        raise ValueError(f"unknown which={which!r}; accepted: magnitude, largest")
    order = _top_by_magnitude if which == "magnitude" else (lambda ev, k: jnp.sort(ev)[::-1][:k])
    if method == "dense":
        H = hessian(loss_fn, alpha, chunk_size)
        return order(jnp.linalg.eigvalsh((H + H.T) / 2), k)
    if method == "lanczos":
        if k is None:
            raise ValueError("method='lanczos' needs a finite k; use method='dense' for the whole spectrum")
        hv, n = hvp_fn(loss_fn, alpha)
        it = num_iter or max(3 * k, 40)
        key = jax.random.key(0) if key is None else key
        ritz = lanczos(hv, n, it, key, ravel_pytree(alpha)[0].dtype)
        return order(ritz, k)
    raise ValueError(f"unknown eigenvalue method {method!r}; accepted: dense, lanczos")


def discretization_gap(evaluate: Callable, space, genotype) -> dict:
    """Validation accuracy of the continuous supernet vs the same weights with the
    one-hot alpha of ``genotype``. ``evaluate(alpha=None, normalized=False, prefix=...)``
    returns ``{prefix_loss, prefix_acc}`` (e.g. :meth:`jaxdarts.search.Runner.evaluate`:
    eval-mode BN on the architecture split)."""
    onehot = genotype_lib.to_alpha(space, genotype)
    cont = evaluate(prefix="continuous")
    disc = evaluate(alpha=onehot, normalized=True, prefix="discrete")
    return {**cont, **disc, "accuracy_drop": cont["continuous_acc"] - disc["discrete_acc"]}


# ------------------------------------------------------------------ StacNAS analyses
def op_outputs(model, variables, x, alpha, cell: int, edges: Iterable[int], *, normalized: bool = False):
    """Each candidate op's output on ``edges`` of supernet cell ``cell`` before mixing, in
    eval mode: ``{edge: (K, N, H, W, C)}`` (K = the space's padded op count; zeros for
    ``none`` and padded slots). ``model`` is a :class:`jaxdarts.supernet.Supernet` (DARTS
    macro); ``variables`` its ``params``/``batch_stats``. Jit the caller for many batches."""
    space = spaces_lib.get(model.space)
    if space.macro != "darts":
        raise ValueError(f"op_outputs reads DARTS-macro supernets; space {space.name!r} is {space.macro!r}")
    if not 0 <= cell < model.layers:
        raise ValueError(f"cell={cell} is not a cell of this {model.layers}-cell supernet; accepted: 0..{model.layers - 1}")
    _, mut = model.clone(capture_ops=True).apply(variables, x, alpha, train=False, normalized=normalized,
                                                 mutable=["intermediates"])
    inter = mut["intermediates"][f"cell_{cell}"]
    ctype = space.cell_type_of(cell, model.layers)
    index = sum(space.cell_type_of(i, model.layers) == ctype for i in range(cell)) if space.cell_ops else None
    groups = supernet_lib.edge_groups(space, ctype, ctype == "reduce", index, model.edge_loop)
    out = {}
    for e in edges:
        g = next((g for g in groups if e in g.edges), None)
        if g is None:
            raise ValueError(f"edge={e} is not an edge of space {space.name!r}; accepted: 0..{space.num_edges - 1}")
        out[e] = inter["ops_" + g.name][0][g.edges.index(e)]
    return out


class PooledCorrelation:
    """StacNAS Appendix B correlation between ops, streamed over batches (float64 on host).

    For op features ``x_a[n, d]`` (sample n, position d = every (h, w, c)), centred by the
    per-position mean over all samples, ``rho_ab = sum_{n,d} xc_a xc_b / sqrt(sum xc_a^2
    sum xc_b^2)`` (the code's online update computes exactly this). Memory: the per-position
    sums ``(K, D)`` and a ``(K, K)`` matrix of cross sums, whatever the number of samples,
    using ``sum_n xc_a xc_b = sum_n x_a x_b - S_a S_b / N`` per position."""

    def __init__(self):
        self.n = 0
        self.sums = None
        self.cross = None

    def update(self, feats) -> None:
        """``feats``: ``(K, N, ...)`` outputs of K ops on N samples."""
        f = np.asarray(feats, np.float64)
        f = f.reshape(f.shape[0], f.shape[1], -1)
        if self.sums is None:
            self.sums = np.zeros((f.shape[0], f.shape[2]))
            self.cross = np.zeros((f.shape[0], f.shape[0]))
        self.n += f.shape[1]
        self.sums += f.sum(1)
        flat = f.reshape(f.shape[0], -1)
        self.cross += flat @ flat.T

    def result(self) -> np.ndarray:
        """The ``(K, K)`` correlation matrix (NaN rows/columns for ops with zero variance,
        e.g. ``none``)."""
        cov = self.cross - (self.sums @ self.sums.T) / self.n
        d = np.sqrt(np.clip(np.diag(cov), 0, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            return cov / np.outer(d, d)


def operator_correlation(model, variables, batches: Iterable, alpha, cell: int, edges: Iterable[int], *,
                         normalized: bool = False) -> dict[int, np.ndarray]:
    """:class:`PooledCorrelation` of the ops on each of ``edges`` of ``cell`` over all
    ``batches`` (float image arrays, preprocessed; eval mode): ``{edge: (K, K)}`` in the
    space's op order. One jitted forward per batch; memory bounded by one batch."""
    edges = tuple(edges)
    fn = jax.jit(lambda v, x: op_outputs(model, v, x, alpha, cell, edges, normalized=normalized))
    acc = {e: PooledCorrelation() for e in edges}
    for x in batches:
        out = jax.device_get(fn(variables, x))
        for e in edges:
            acc[e].update(out[e])
    return {e: a.result() for e, a in acc.items()}


def confusion_of_gradients(grads) -> jax.Array:
    """Eq. 7: ``max(0, max_{i != j} -<g_i, g_j>)`` over the rows of ``grads`` (m, P)."""
    g = jnp.asarray(grads)
    gram = g @ g.T
    off = jnp.where(jnp.eye(g.shape[0], dtype=bool), -jnp.inf, -gram)
    return jnp.maximum(0.0, jnp.max(off))


def gradient_confusion(loss_fn: Callable, params, batches) -> jax.Array:
    """Eq. 7 at fixed ``params``: the m per-mini-batch gradients of ``loss_fn(params,
    batch)`` as one ``vmap`` over ``batches`` (a pytree whose leaves have a leading axis m),
    flattened, then :func:`confusion_of_gradients`. Eq. 8 (the paper's Table 6) is the mean
    over 10 such draws divided by the parameter count in millions."""
    grads = jax.vmap(lambda b: ravel_pytree(jax.grad(loss_fn)(params, b))[0])(batches)
    return confusion_of_gradients(grads)


STACNAS_GROUPS = (("max_pool_3x3", "avg_pool_3x3"), ("skip_connect",), ("sep_conv_3x3", "sep_conv_5x5"),
                  ("dil_conv_3x3", "dil_conv_5x5"))
"""The paper's operator groups (the default grouping of StacNAS stage 1/2)."""


def group_ops(corr, names, threshold: float = 0.2) -> tuple[tuple[str, ...], ...]:
    """Operator groups from a correlation matrix by agglomerative clustering (average
    linkage on the distance ``1 - rho``): clusters are merged while the closest pair's
    average correlation is at least ``threshold``. Ops with an undefined correlation
    (NaN, e.g. ``none``) stay alone. Groups are returned in the order of their first op in
    ``names``, ops within a group in ``names`` order."""
    corr = np.asarray(corr, np.float64)
    names = list(names)
    clusters = [[i] for i in range(len(names))]

    def link(a, b):
        vals = [corr[i, j] for i in a for j in b]
        return -np.inf if np.any(np.isnan(vals)) else float(np.mean(vals))

    while len(clusters) > 1:
        best, pair = -np.inf, None
        for x in range(len(clusters)):
            for y in range(x + 1, len(clusters)):
                v = link(clusters[x], clusters[y])
                if v > best:
                    best, pair = v, (x, y)
        if pair is None or best < threshold:
            break
        x, y = pair
        clusters[x] = sorted(clusters[x] + clusters[y])
        del clusters[y]
    return tuple(tuple(names[i] for i in c) for c in sorted(clusters))
