"""Retraining a found cell on CIFAR with the DARTS ``train.py`` recipe.

Commands and expected cost/result:

* ``python bin/train.py --config configs/retrain_cifar.py:quick --workdir /tmp/retrain_quick``
  Embedded Fashion-MNIST (zero-padded to 32x32), DARTS_V2 cell, C=8, 5 cells, 2 epochs x 20 steps of
  batch 32 on all local devices: a few minutes on 2 CPU cores; test top-1 ~0.6.
* ``python bin/train.py --config configs/retrain_cifar.py --workdir /tmp/c10
  --config.genotype=/tmp/balenas_run`` the paper setting: C=36, 20 cells, 600 epochs,
  batch 96, SGD 0.025 cosine to 0 (per epoch), momentum 0.9, weight decay 3e-4, cutout 16,
  drop-path 0.2 ramped, auxiliary 0.4, gradient clipping 5 (DARTS_V2: 3.35 M parameters;
  ~97.2% in the paper).
* ``:cifar100`` CIFAR-100; ``--config.mesh.num_devices=N`` (0 = all), ``--config.mesh.fsdp=True``,
  ``--config.batch_size=768 --config.lr_scaling=linear`` for large data-parallel batches.

``--config.genotype`` takes a published name (DARTS_V1, DARTS_V2, MS_DARTS), a search
workdir, a JSON file, a PyTorch ``Genotype(...)`` text or an NB201 string
(:func:`jaxdarts.genotype.resolve`). Re-running a command resumes.
"""

from jaxdarts import config as config_lib
from jaxdarts import retrain

VARIANTS = ("quick", "cifar100")


def get_config(arg: str = ""):
    c = retrain.base_config()
    for v in config_lib.variants(arg, VARIANTS, "configs/retrain_cifar.py"):
        if v == "quick":
            retrain.quick(c)
        elif v == "cifar100":
            c.dataset = "cifar100"
    return c
