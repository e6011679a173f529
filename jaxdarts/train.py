"""Training discrete architectures (retraining / evaluation).

:func:`train_and_evaluate` trains a :class:`~jaxdarts.networks.NetworkCIFAR` built from a
genotype with the DARTS ``train.py`` recipe (SGD, cosine to 0, weight decay, auxiliary
loss, drop-path ramp, cutout) and returns test accuracy (R-DARTS selects among candidates
with short runs of it: :mod:`jaxdarts.methods.robustdarts`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdarts import data as data_lib
from jaxdarts import optim
from jaxdarts.genotype import Genotype
from jaxdarts.networks import NetworkCIFAR
from jaxdarts.losses import with_auxiliary


@functools.lru_cache(maxsize=16)
def _programs(genotype_json, C, layers, auxiliary, aux_weight, lowering, ds_info, cutout, lr, total_steps, weight_decay,
              grad_clip):
    """``(init, step, predict)`` jitted once per network and recipe (selection by retraining
    trains the same candidates again when it resumes)."""
    model = NetworkCIFAR(Genotype.from_json(genotype_json), C=C, layers=layers, auxiliary=auxiliary,
                         num_classes=ds_info.num_classes, lowering=lowering)
    tx = optim.sgd(optax.cosine_decay_schedule(lr, total_steps), 0.9, weight_decay, grad_clip)

    @jax.jit
    def init(key, x0):
        variables = model.init({"params": key, "dropout": key}, x0, train=True)
        return variables["params"], variables["batch_stats"], tx.init(variables["params"])

    @jax.jit
    def step(params, bstats, opt, batch, k, drop):
        x = data_lib.augment(jax.random.fold_in(k, 0), batch["image"], ds_info.mean, ds_info.std,
                             flip=ds_info.flip, cutout=cutout)

        def loss_fn(p):
            out, mut = model.apply({"params": p, "batch_stats": bstats}, x, train=True, drop_prob=drop,
                                   rngs={"dropout": jax.random.fold_in(k, 1)}, mutable=["batch_stats"])
            logits, aux = out if isinstance(out, tuple) else (out, None)
            return with_auxiliary(logits, aux, batch["label"], aux_weight)[0], mut["batch_stats"]

        (loss, new_bs), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), new_bs, opt, loss

    @jax.jit
    def predict(params, bstats, images):
        x = data_lib.normalize(images, ds_info.mean, ds_info.std)
        return jnp.argmax(model.apply({"params": params, "batch_stats": bstats}, x, train=False), -1)

    return init, step, predict


def train_and_evaluate(genotype, train_data, test_data, *, ds_info, C=36, layers=20, auxiliary=True,
                       aux_weight=0.4, epochs=600, batch_size=96, lr=0.025, weight_decay=3e-4, drop_path=0.2,
                       cutout=16, grad_clip=5.0, seed=0, lowering="auto", log=None) -> float:
    """Trains from scratch and returns test accuracy (eval-mode BN)."""
    stream = data_lib.BatchStream(*train_data, batch_size, seed)
    spe = stream.steps_per_epoch
    init, step, predict = _programs(genotype.to_json(), C, layers, auxiliary, aux_weight, lowering, ds_info, cutout,
                                    lr, epochs * spe, weight_decay, grad_clip)
    key = jax.random.key(seed)
    params, bstats, opt = init(key, jnp.zeros((2,) + train_data[0].shape[1:], jnp.float32))
    for epoch in range(epochs):
        drop = np.float32(drop_path * epoch / epochs)
        for i, b in enumerate(stream.epoch(epoch)):
            params, bstats, opt, loss = step(params, bstats, opt, b, jax.random.fold_in(key, epoch * spe + i), drop)
        if log:
            log(f"retrain epoch {epoch + 1}/{epochs} loss {float(loss):.4f}")
    x, y = test_data
    correct = 0
    n = (len(x) // batch_size) * batch_size
    for i in range(0, n, batch_size):
        correct += int(jnp.sum(predict(params, bstats, x[i:i + batch_size]) == y[i:i + batch_size]))
    return correct / max(n, 1)
