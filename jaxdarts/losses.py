"""Classification losses shared by the search engine and retraining."""

from __future__ import annotations

import jax
import optax


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
    """Mean softmax cross-entropy with integer labels (optionally label-smoothed)."""
    onehot = jax.nn.one_hot(labels, logits.shape[-1])
    if label_smoothing:
        onehot = optax.smooth_labels(onehot, label_smoothing)
    return optax.softmax_cross_entropy(logits, onehot).mean()


def with_auxiliary(logits, aux_logits, labels, aux_weight: float, label_smoothing: float = 0.0):
    """DARTS training loss: ``CE(logits) + aux_weight * CE(aux_logits)`` (the auxiliary
    tower's term only when ``aux_logits`` is not None). Returns ``(total, main_loss)``."""
    loss = cross_entropy(logits, labels, label_smoothing)
    if aux_logits is None:
        return loss, loss
    return loss + aux_weight * cross_entropy(aux_logits, labels, label_smoothing), loss
