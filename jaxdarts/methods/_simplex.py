"""Shared by the simplex-perturbation methods (MS-DARTS, SDARTS): the supernet's loss at
given mixing weights, the padding masks and the clean mixing weights of a search state."""

from __future__ import annotations

import jax.numpy as jnp

from jaxdarts import supernet as supernet_lib
from jaxdarts.losses import cross_entropy

LOSS_BNS = ("eval", "train")


def masks(space) -> dict:
    """``{cell_type: (E, K) bool}``: the real op slots (broadcast over per-cell alphas)."""
    return {t: jnp.asarray(space.mask(t)) for t in space.cell_types}


def clean_weights(task, state) -> dict:
    """softmax(alpha) per edge row (padded slots 0): the centre of every perturbation."""
    return supernet_lib.mixing_weights(task.space, state.alpha)


def loss_at_weights(task, state, batch, bn: str):
    """``weights -> cross-entropy`` of the supernet with those mixing weights on ``batch``
    (main head). ``bn='eval'``: running BatchNorm statistics (the MS-DARTS/SDARTS code puts
    the model in eval mode for its sample losses and attacks); ``'train'``: batch
    statistics, no drop-path, statistics not updated."""
    if bn == "eval":
        def loss(w):
            logits, _, _ = task.apply(state.params, state.batch_stats, w, batch, train=False, normalized=True)
            return cross_entropy(logits, batch["label"])
    else:
        b = {**batch, "drop_prob": jnp.zeros((), jnp.float32)}

        def loss(w):
            logits, _, _ = task.apply(state.params, state.batch_stats, w, b, train=True, normalized=True)
            return cross_entropy(logits, batch["label"])
    return loss


def distance(a, b):
    """The L2 distance between two weight trees (all leaves together) and the largest
    absolute coordinate difference."""
    d = [jnp.ravel(x - y) for x, y in zip(_leaves(a), _leaves(b))]
    d = jnp.concatenate(d)
    return jnp.sqrt(jnp.sum(d ** 2)), jnp.max(jnp.abs(d))


def _leaves(t):
    return [t[k] for k in sorted(t)]
