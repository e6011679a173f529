"""Training a NAS-Bench-201 cell with the benchmark's recipe.

Commands and expected cost/result:

* ``python bin/train.py --config configs/retrain_nb201.py:quick --workdir /tmp/nb201_quick``
  embedded Fashion-MNIST 16x16, C=8, N=1, 2 epochs x 20 steps: about a minute on 2 cores.
* ``python bin/train.py --config configs/retrain_nb201.py --workdir /tmp/nb201
  --config.genotype='|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|'``
  CIFAR-10, ``NetworkNB201`` C=16, N=5, 200 epochs, batch 256, SGD Nesterov momentum 0.9,
  lr 0.1 cosine to 0 per iteration, weight decay 5e-4, random crop (pad 4) + flip, no
  cutout / drop-path / auxiliary head / clipping (NAS-Bench-201's ``LESS.config`` run with
  200 epochs). The genotype may also be a search workdir of an ``nb201`` search.
"""

from jaxdarts import config as config_lib
from jaxdarts import retrain

VARIANTS = ("quick",)


def get_config(arg: str = ""):
    c = retrain.base_config()
    c.network = "nb201"
    c.genotype = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    c.data.cutout = 0
    c.model.update(C=16, N=5, auxiliary=False, aux_weight=0.0, drop_path=0.0)
    c.batch_size = c.eval_batch_size = c.base_batch_size = 256
    c.lr, c.schedule, c.nesterov, c.weight_decay, c.grad_clip, c.epochs = 0.1, "cosine_step", True, 5e-4, 0.0, 200
    for v in config_lib.variants(arg, VARIANTS, "configs/retrain_nb201.py"):
        if v == "quick":
            retrain.quick(c)
            c.data.update(cutout=0, image_size=16, pad=2)  # CIFAR's 4 of 32 pixels in proportion
            c.model.update(C=8, N=1)
    return c
