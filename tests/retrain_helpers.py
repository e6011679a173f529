"""Tiny retraining configs shared by test_parallel.py and its multi-process worker
(which must not import conftest: it sets 8 CPU devices)."""

import jax

from jaxdarts import retrain


def tiny_retrain(**kw):
    c = retrain.base_config()
    c.dataset = "fashion_mnist"
    c.data.update(image_size=32, max_examples=128, max_test_examples=40, cutout=8)  # aux head needs 8x8
    c.model.update(C=4, layers=3)
    c.batch_size = c.eval_batch_size = 16
    c.epochs, c.steps_per_epoch = 2, 2
    for k, v in kw.items():
        node, *path = c, *k.split(".")
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = v
    return c


def _steps(trainer, n=3):
    state, losses = trainer.init_state(), []
    for i, b in enumerate(trainer.stream.epoch(0, 0, n)):
        state, m = trainer.train_step(state, b, epoch=1)  # epoch 1: drop-path active
        losses.append(float(m["total_loss"]))
    return jax.device_get(state), losses
