"""Optimisers with PyTorch semantics, as used by the reference implementations.

* :func:`sgd`: ``torch.optim.SGD(lr, momentum, weight_decay)`` after
  ``clip_grad_norm_(clip)``: clip raw gradients, add ``wd * w``, momentum buffer
  ``buf = mu * buf + d`` (first step ``buf = d``), ``w -= lr * buf``.
* :func:`adam`: ``torch.optim.Adam(lr, betas, weight_decay)`` (coupled L2: ``wd * a``
  added to the gradient before the moments).
* :func:`cosine_epoch_schedule`: ``CosineAnnealingLR(T_max=epochs, eta_min)`` stepped per
  epoch: epoch ``e`` (0-based) uses ``eta_min + (lr - eta_min)(1 + cos(pi e / epochs)) / 2``.
  :func:`cosine_step_schedule`: the same annealed per iteration (NAS-Bench-201's DARTS).
* :func:`vadam`: variational Adam over a Gaussian ``q(alpha) = N(mu, sigma^2)`` (BaLeNAS),
  with :func:`vadam_sigma` and :func:`vadam_sample`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


def cosine_epoch_schedule(lr: float, lr_min: float, epochs: int, steps_per_epoch: int):
    """Per-step schedule that is constant within an epoch (DARTS's per-epoch cosine)."""

    def schedule(step):
        epoch = jnp.minimum(step // steps_per_epoch, epochs)
        return lr_min + (lr - lr_min) * (1 + jnp.cos(jnp.pi * epoch / epochs)) / 2

    return schedule


def cosine_step_schedule(lr: float, lr_min: float, epochs: int, steps_per_epoch: int):
    """Cosine annealing from ``lr`` to ``lr_min`` updated every iteration over
    ``epochs * steps_per_epoch`` steps (AutoDL-Projects' ``CosineAnnealingLR`` with
    per-iteration ``update(epoch, iter / steps)``, NAS-Bench-201's DARTS)."""
    total = epochs * steps_per_epoch

    def schedule(step):
        t = jnp.minimum(step, total) / total
        return lr_min + (lr - lr_min) * (1 + jnp.cos(jnp.pi * t)) / 2

    return schedule


def sgd(learning_rate, momentum: float = 0.9, weight_decay=3e-4, clip: float | None = 5.0, nesterov: bool = False):
    """PyTorch SGD with coupled weight decay and gradient-norm clipping.

    ``weight_decay`` may be a float or an ``optax.inject_hyperparams``-style schedule;
    to change it during a run (DARTS-ADA) use :func:`sgd_injectable`. ``nesterov``:
    PyTorch's Nesterov form (``buf = mu buf + d; w -= lr (d + mu buf)``, optax's too).
    """
    parts = []
    if clip is not None and clip > 0:
        parts.append(optax.clip_by_global_norm(clip))
    parts += [optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov)]
    return optax.chain(*parts)


def sgd_injectable(learning_rate, momentum: float = 0.9, weight_decay: float = 3e-4, clip: float | None = 5.0,
                   nesterov: bool = False):
    """:func:`sgd` whose ``weight_decay`` lives in the optimiser state
    (``state.hyperparams['weight_decay']``) so it can be changed without recompiling."""
    return optax.inject_hyperparams(
        lambda learning_rate, weight_decay: sgd(learning_rate, momentum, weight_decay, clip, nesterov),
        static_args=())(learning_rate=learning_rate, weight_decay=weight_decay)


def adam(learning_rate=3e-4, b1: float = 0.5, b2: float = 0.999, weight_decay: float = 1e-3, eps: float = 1e-8):
    """PyTorch Adam with coupled L2 weight decay (DARTS architecture optimiser)."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(learning_rate, b1, b2, eps))


def momentum_buffer(opt_state):
    """The SGD momentum buffer (``optax.TraceState.trace``) inside an optimiser state,
    or None when there is none (needed to mirror the real update in the unrolled step)."""
    return optax.tree.get(opt_state, "trace")


def hyperparam(opt_state, name: str):
    """A hyperparameter of an ``inject_hyperparams`` optimiser state."""
    return optax.tree.get(opt_state, name)


def set_hyperparam(opt_state, name: str, value):
    """``opt_state`` with hyperparameter ``name`` set to ``value`` (dtype kept: no recompile)."""
    old = optax.tree.get(opt_state, name)
    return optax.tree.set(opt_state, **{name: jnp.asarray(value, jnp.asarray(old).dtype)})


# ---------------------------------------------------------------------- VAdam
VADAM_FORMS = ("adam", "paper")


class VadamState(NamedTuple):
    """State of :func:`vadam`: step ``count``, ``m`` (first moment for ``form='adam'``; the
    previous step ``mu_t - mu_{t-1}`` for ``form='paper'``), ``s`` (the raw, not
    bias-corrected, second-moment / precision statistic), and the scalars that define
    sigma (``dataset_size``, ``prior_precision``)."""

    count: jax.Array
    m: Any
    s: Any
    dataset_size: jax.Array
    prior_precision: jax.Array


def vadam(learning_rate=3e-4, b1: float = 0.5, b2: float = 0.999, prior_precision: float = 1.0,
          init_precision: float = 1.0, *, dataset_size: float, form: str = "adam"
          ) -> optax.GradientTransformationExtraArgs:
    """Variational Adam over ``q(alpha) = N(mu, diag sigma^2)``; ``params`` are ``mu``.

    ``sigma = 1 / sqrt(N s + lambda)`` (:func:`vadam_sigma`) with ``N = dataset_size``,
    ``lambda = prior_precision`` and ``s`` the raw statistic of the state; ``s_0 =
    (init_precision - prior_precision) / N``, so ``sigma_1 = init_precision^-1/2``.
    The caller draws ``alpha ~ N(mu, sigma^2)`` (:func:`vadam_sample`), takes the gradient
    at the draws and passes its Monte-Carlo mean as ``grads`` and the mean of the squared
    gradients as ``grad_sq`` to ``update(grads, state, params, grad_sq=...)`` (``grad_sq``
    defaults to ``grads**2``, exact for one sample). With ``lt = lambda / N``:

    ``form='adam'`` (default; the reference ``Vadam.step`` of emtiyaz/vadam, which BaLeNAS
    calls)::

        m_t = b1 m + (1 - b1) (g + lt mu);   s_t = b2 s + (1 - b2) grad_sq
        mu_t = mu - lr * (m_t / (1 - b1^t)) / (sqrt(s_t / (1 - b2^t)) + lt)

    ``form='paper'`` (BaLeNAS Eq. 17-18 literally, ``b2 = 1 - beta_t`` the EMA rate of
    Eq. 18, ``lr`` the step of Eq. 17, ``b1`` its momentum ``gamma``; ``grad_sq`` is not
    used: Eq. 18 takes the square of the mean gradient)::

        s_t = b2 s + (1 - b2) g * g
        mu_t = mu - lr (g + lt mu) / (s_t + lt) + b1 (s + lt) / (s_t + lt) (mu - mu_prev)

    ``learning_rate`` may be an optax schedule of the step count. Slots whose gradient is
    always 0 and whose ``mu`` is 0 (padded alpha) never move; their sigma is not 0, so
    samplers mask them (:func:`vadam_sample`'s ``mask``).
    """
    if form not in VADAM_FORMS:
        raise ValueError(f"vadam form={form!r} is not accepted; accepted: {', '.join(VADAM_FORMS)}")
    if not dataset_size or dataset_size <= 0:
        raise ValueError(f"vadam dataset_size={dataset_size!r} must be a positive number")
    n, lam = float(dataset_size), float(prior_precision)
    s0 = (float(init_precision) - lam) / n
    lt = lam / n
    lr_fn = learning_rate if callable(learning_rate) else (lambda _: learning_rate)

    def init(params):
        return VadamState(count=jnp.zeros((), jnp.int32), m=jax.tree.map(jnp.zeros_like, params),
                          s=jax.tree.map(lambda p: jnp.full_like(p, s0), params),
                          dataset_size=jnp.asarray(n, jnp.result_type(float)),
                          prior_precision=jnp.asarray(lam, jnp.result_type(float)))

    def update(grads, state, params=None, grad_sq=None, **_):
        if params is None:
            raise ValueError("vadam needs params (mu) in update: its prior term is lambda/N * mu")
        count = state.count + 1
        lr = lr_fn(state.count)
        if form == "adam":
            g2 = jax.tree.map(jnp.square, grads) if grad_sq is None else grad_sq
            m = jax.tree.map(lambda m, g, p: b1 * m + (1 - b1) * (g + lt * p), state.m, grads, params)
            s = jax.tree.map(lambda s, q: b2 * s + (1 - b2) * q, state.s, g2)
            c1 = 1 - b1 ** count.astype(jnp.result_type(float))
            c2 = 1 - b2 ** count.astype(jnp.result_type(float))
            updates = jax.tree.map(lambda m, s: -lr * (m / c1) / (jnp.sqrt(s / c2) + lt), m, s)
        else:
            s = jax.tree.map(lambda s, g: b2 * s + (1 - b2) * g * g, state.s, grads)
            updates = jax.tree.map(
                lambda g, p, s_old, s_new, d: -lr * (g + lt * p) / (s_new + lt) + b1 * (s_old + lt) / (s_new + lt) * d,
                grads, params, state.s, s, state.m)
            m = updates
        return updates, state._replace(count=count, m=m, s=s)

    return optax.GradientTransformationExtraArgs(init, update)


def vadam_sigma(state: VadamState):
    """Standard deviation of ``q`` per alpha entry: ``1 / sqrt(N s + lambda)`` (raw ``s``;
    the reference's, = BaLeNAS Eq. 13 ``sigma^2 = 1 / (N (s + lambda / N))``)."""
    def one(s):  # the scalars broadcast over a stacked (vmapped sweep) state's leading axes too
        n, lam = (jnp.reshape(v, jnp.shape(v) + (1,) * (s.ndim - jnp.ndim(v)))
                  for v in (state.dataset_size, state.prior_precision))
        return jax.lax.rsqrt(n * s + lam)

    return jax.tree.map(one, state.s)


def gaussian_sample(key, mu, sigma, num_samples: int = 1, mask=None, sigma_scale=1.0):
    """``num_samples`` draws ``mu + sigma_scale * sigma * eps`` stacked on a new leading
    axis (one key per leaf, in leaf order); entries where ``mask`` (a pytree of booleans
    like ``mu``) is False get no noise."""
    leaves, tree = jax.tree.flatten(mu)
    keys = jax.random.split(key, len(leaves))
    masks = jax.tree.leaves(mask) if mask is not None else [None] * len(leaves)
    out = []
    for k, m, s, msk in zip(keys, leaves, jax.tree.leaves(sigma), masks):
        eps = jax.random.normal(k, (num_samples,) + jnp.shape(m), jnp.result_type(m))
        if msk is not None:
            eps = jnp.where(msk, eps, 0.0)
        out.append(m + sigma_scale * s * eps)
    return jax.tree.unflatten(tree, out)


def vadam_sample(key, mu, state: VadamState, num_samples: int = 1, mask=None, sigma_scale=1.0):
    """:func:`gaussian_sample` with the state's sigma (:func:`vadam_sigma`)."""
    return gaussian_sample(key, mu, vadam_sigma(state), num_samples, mask, sigma_scale)
