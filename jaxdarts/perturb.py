"""Perturbations of the mixing weights on the per-edge simplex: MS-DARTS mean-shift and the
SDARTS random smoothing and adversarial attack.

All functions act on a pytree of mixing weights (``{cell_type: (..., E, K)}``, rows on the
simplex, e.g. :func:`jaxdarts.supernet.mixing_weights`) with a matching tree of boolean
masks (``True`` = a real op slot; padded slots of ragged spaces stay exactly 0) and a loss
``loss_fn(weights) -> scalar`` (the supernet's loss at those mixing weights,
``normalized=True``). They are pure and traceable: radius and bandwidth may be traced
scalars, so a sweep over them is one program. Sample losses are ONE ``vmap`` over the
samples (``sample_eval='vmap'``), or a ``lax.map`` (``'map'``: the same numbers, one
sample's activations in memory at a time).

References: MS-DARTS ``attacker/perturb_ms.py::Mean_Shift_alpha`` (aaron851113/MS-DARTS),
SDARTS ``Random_alpha`` / ``Linf_PGD_alpha`` and ``model_search.py::clip``
(xiangning-chen/SmoothDARTS); ``../shared/METHODS_SPEC.md`` section 1.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

__all__ = ["clip_simplex", "uniform_noise", "mean_shift", "random_smoothing", "pgd_attack", "epsilon_schedule",
           "EPS_SCHEDULES", "OMEGAS", "AVERAGES", "SAMPLE_EVALS"]

EPS_SCHEDULES = ("ms", "sdarts", "const")
OMEGAS = ("softmax", "proportional")
AVERAGES = ("unclipped", "clipped")
SAMPLE_EVALS = ("vmap", "map")


def _masks(weights, mask):
    if mask is None:
        return jax.tree.map(lambda w: jnp.ones(w.shape, bool), weights)
    return jax.tree.map(lambda w, m: jnp.broadcast_to(jnp.asarray(m, bool), w.shape), weights, mask)


def clip_simplex(weights, mask=None):
    """The SDARTS/MS-DARTS ``clip``: each row (last axis) clamped to [0, 1]; a row that
    becomes all zero puts 1 at its pre-clamp argmax; then divided by its sum. Padded slots
    (``mask`` False) stay 0 and never win the argmax."""

    def one(w, m):
        w = jnp.where(m, w, 0.0)
        c = jnp.clip(w, 0.0, 1.0)
        s = jnp.sum(c, axis=-1, keepdims=True)
        top = jnp.argmax(jnp.where(m, w, -jnp.inf), axis=-1)
        onehot = jax.nn.one_hot(top, w.shape[-1], dtype=w.dtype)
        c = jnp.where(s == 0, onehot, c)
        return c / jnp.sum(c, axis=-1, keepdims=True)

    return jax.tree.map(one, weights, _masks(weights, mask))


def uniform_noise(key, weights, shape: tuple[int, ...] = (), mask=None):
    """iid U(-1, 1) draws of ``shape + w.shape`` for every leaf (0 on padded slots); scaled by
    the radius where used, so a radius sweep shares the draws."""
    leaves, tree = jax.tree.flatten(weights)
    masks = jax.tree.leaves(_masks(weights, mask))
    keys = jax.random.split(key, len(leaves))
    out = [jnp.where(m, jax.random.uniform(k, shape + w.shape, w.dtype, -1.0, 1.0), 0.0)
           for k, w, m in zip(keys, leaves, masks)]
    return jax.tree.unflatten(tree, out)


def _eval_samples(loss_fn, samples, sample_eval):
    if sample_eval == "vmap":
        return jax.vmap(loss_fn)(samples)
    if sample_eval == "map":
        return jax.lax.map(loss_fn, samples)
    raise ValueError(f"sample_eval={sample_eval!r} is not accepted; accepted: {', '.join(SAMPLE_EVALS)}")


def _log_omega(losses, omega, temperature):
    if omega == "softmax":  # the code: softmax of the sample losses (higher loss, higher weight)
        return jax.nn.log_softmax(losses / temperature)
    if omega == "proportional":  # the paper: omega_p proportional to the loss
        return jnp.log(losses) - jnp.log(jnp.sum(losses))
    raise ValueError(f"omega={omega!r} is not accepted; accepted: {', '.join(OMEGAS)}")


def mean_shift(center, loss_fn: Callable, noise, *, epsilon, bandwidth, mask=None, omega: str = "softmax",
               temperature=1.0, average: str = "unclipped", clip_result: bool = False, log_space: bool = True,
               sample_eval: str = "vmap"):
    """MS-DARTS mean-shift (Alg. 1 as the reference code runs it) from ``center``.

    ``noise``: the tree of ``center`` with leaves of shape ``(T, N) + leaf.shape`` in
    [-1, 1] (:func:`uniform_noise`); T iterations of N samples. Iteration t: samples
    ``x_n = c + epsilon * noise[t, n]``, ``z_n = clip_simplex(x_n)``, losses
    ``L_n = loss_fn(z_n)`` (one batched evaluation), ``omega = softmax(L / temperature)``
    (or ``L / sum L``, ``omega='proportional'``, the paper), and per leaf k the weights
    ``omega_n K((c_k - z_{n,k}) / h)`` with the Gaussian kernel of standard deviation
    ``h = bandwidth`` (Eq. 11 and the code; Eq. 13-14 treat h as a variance); the new centre
    is their weighted mean of the unclipped ``x_n`` (``average='clipped'``: of ``z_n``). The
    result is not clipped (the code; ``clip_result=True`` projects it onto the simplex).

    ``log_space`` (default) normalises the weights in log space; False is the reference's
    direct ratio of exponentials, which becomes 0/0 (NaN) once ``||c - z||^2 / h^2`` exceeds
    ~175 in float32 (kept for the tests that compare the two).

    Returns ``(weights, info)``: ``info['losses']`` ``(T, N)`` sample losses and
    ``info['weights']`` ``{leaf: (T, N)}`` normalised sample weights (tree of ``center``).
    """
    if average not in AVERAGES:
        raise ValueError(f"average={average!r} is not accepted; accepted: {', '.join(AVERAGES)}")
    masks = _masks(center, mask)
    h2 = jnp.square(jnp.asarray(bandwidth, jax.tree.leaves(center)[0].dtype))
    T = jax.tree.leaves(noise)[0].shape[0]

    def step(c, noise_t):
        x = jax.tree.map(lambda c_, u: c_[None] + epsilon * u, c, noise_t)  # (N, ...) per leaf
        z = jax.vmap(lambda s: clip_simplex(s, masks))(x)
        losses = _eval_samples(loss_fn, z, sample_eval)
        log_om = _log_omega(losses, omega, temperature)
        pts = x if average == "unclipped" else z

        def shift(c_k, z_k, p_k):
            axes = tuple(range(1, z_k.ndim))
            d2 = jnp.sum(jnp.square(c_k[None] - z_k), axis=axes)
            if log_space:
                w = jax.nn.softmax(log_om - d2 / (2 * h2))
            else:  # the reference: omega * exp(-d^2 / 2h^2) / (h sqrt(2 pi)), then a direct ratio
                kern = jnp.exp(-0.5 * d2 / h2) / (jnp.sqrt(h2) * jnp.sqrt(2 * jnp.pi))
                w = jnp.exp(log_om) * kern
                w = w / jnp.sum(w)
            return jnp.tensordot(w, p_k, axes=1), w

        out = jax.tree.map(shift, c, z, pts)
        new_c = jax.tree.map(lambda o: o[0], out, is_leaf=lambda o: isinstance(o, tuple))
        ws = jax.tree.map(lambda o: o[1], out, is_leaf=lambda o: isinstance(o, tuple))
        return new_c, (losses, ws)

    c = center
    infos = []
    for t in range(T):  # T is small (2-5): unrolled, so the iterations' samples never alias
        c, info = step(c, jax.tree.map(lambda u: u[t], noise))
        infos.append(info)
    if clip_result:
        c = clip_simplex(c, masks)
    losses = jnp.stack([i[0] for i in infos])
    ws = jax.tree.map(lambda *xs: jnp.stack(xs), *[i[1] for i in infos])
    return c, {"losses": losses, "weights": ws}


def random_smoothing(center, noise, *, epsilon, mask=None):
    """SDARTS-RS: ``clip_simplex(center + epsilon * noise)`` with ``noise`` in [-1, 1]
    (:func:`uniform_noise`, the code's iid U(-epsilon, epsilon) per coordinate)."""
    return clip_simplex(jax.tree.map(lambda c, u: c + epsilon * u, center, noise), mask)


def pgd_attack(center, loss_fn: Callable, noise, *, epsilon, steps: int = 7, random_start: bool = True,
               mask=None):
    """SDARTS-ADV (``Linf_PGD_alpha``): projected sign-gradient ascent of ``loss_fn`` in the
    L-infinity ball of radius ``epsilon`` around ``center``, step ``2 epsilon / steps``.

    Random start ``clip_simplex(center + epsilon * noise)``; each step ``a += lr *
    sign(grad loss(a))``, ``a = center + clamp(a - center, -epsilon, epsilon)``,
    ``a = clip_simplex(a)``. When the attack ends with a lower loss than ``center`` had, the
    clean ``center`` is returned (the code). Returns ``(weights, info)`` with
    ``info['loss_clean']``, ``info['loss_adv']``, ``info['reverted']``."""
    masks = _masks(center, mask)
    lr = 2.0 * epsilon / steps
    loss_clean = loss_fn(center)
    a = random_smoothing(center, noise, epsilon=epsilon, mask=masks) if random_start else center
    grad = jax.grad(loss_fn)

    def body(_, a):
        g = grad(a)
        a = jax.tree.map(lambda a_, g_: a_ + lr * jnp.sign(g_), a, g)
        a = jax.tree.map(lambda a_, c_: c_ + jnp.clip(a_ - c_, -epsilon, epsilon), a, center)
        return clip_simplex(a, masks)

    a = jax.lax.fori_loop(0, steps, body, a)
    loss_adv = loss_fn(a)
    reverted = loss_clean > loss_adv
    out = jax.tree.map(lambda c_, a_: jnp.where(reverted, c_, a_), center, a)
    return out, {"loss_clean": loss_clean, "loss_adv": loss_adv, "reverted": reverted}


def epsilon_schedule(kind: str, epsilon, epoch, epochs):
    """The radius at 0-based ``epoch`` of ``epochs``: ``'ms'`` (MS-DARTS code)
    ``eps/10 + (eps - eps/10) e/E``; ``'sdarts'`` (SDARTS code) ``0.03 + (eps - 0.03) e/E``;
    ``'const'`` ``eps``. Neither ramp reaches ``eps`` (e < E), as in the code."""
    frac = epoch / epochs
    if kind == "ms":
        return epsilon / 10 + (epsilon - epsilon / 10) * frac
    if kind == "sdarts":
        return 0.03 + (epsilon - 0.03) * frac
    if kind == "const":
        return epsilon
    raise ValueError(f"eps_schedule={kind!r} is not accepted; accepted: {', '.join(EPS_SCHEDULES)}")
