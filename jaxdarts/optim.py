"""Optimisers with PyTorch semantics, as used by the reference implementations.

* :func:`sgd`: ``torch.optim.SGD(lr, momentum, weight_decay)`` after
  ``clip_grad_norm_(clip)``: clip raw gradients, add ``wd * w``, momentum buffer
  ``buf = mu * buf + d`` (first step ``buf = d``), ``w -= lr * buf``.
* :func:`adam`: ``torch.optim.Adam(lr, betas, weight_decay)`` (coupled L2: ``wd * a``
  added to the gradient before the moments).
* :func:`cosine_epoch_schedule`: ``CosineAnnealingLR(T_max=epochs, eta_min)`` stepped per
  epoch: epoch ``e`` (0-based) uses ``eta_min + (lr - eta_min)(1 + cos(pi e / epochs)) / 2``.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax


def cosine_epoch_schedule(lr: float, lr_min: float, epochs: int, steps_per_epoch: int):
    """Per-step schedule that is constant within an epoch (DARTS's per-epoch cosine)."""

    def schedule(step):
        epoch = jnp.minimum(step // steps_per_epoch, epochs)
        return lr_min + (lr - lr_min) * (1 + jnp.cos(jnp.pi * epoch / epochs)) / 2

    return schedule


def sgd(learning_rate, momentum: float = 0.9, weight_decay=3e-4, clip: float | None = 5.0):
    """PyTorch SGD with coupled weight decay and gradient-norm clipping.

    ``weight_decay`` may be a float or an ``optax.inject_hyperparams``-style schedule;
    to change it during a run (DARTS-ADA) use :func:`sgd_injectable`.
    """
    parts = []
    if clip is not None and clip > 0:
        parts.append(optax.clip_by_global_norm(clip))
    parts += [optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate, momentum=momentum)]
    return optax.chain(*parts)


def sgd_injectable(learning_rate, momentum: float = 0.9, weight_decay: float = 3e-4, clip: float | None = 5.0):
    """:func:`sgd` whose ``weight_decay`` lives in the optimiser state
    (``state.hyperparams['weight_decay']``) so it can be changed without recompiling."""
    return optax.inject_hyperparams(
        lambda learning_rate, weight_decay: sgd(learning_rate, momentum, weight_decay, clip),
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
