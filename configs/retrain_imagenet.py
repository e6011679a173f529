"""Retraining a found cell on ImageNet with the DARTS ``train_imagenet.py`` recipe.

Commands and expected cost/result:

* ``python bin/train.py --config configs/retrain_imagenet.py --workdir /tmp/imagenet``
  TFDS ``imagenet2012`` (prepared once, manual download; unprepared: an error at once),
  ``NetworkImageNet`` C=48, 14 cells, 250 epochs, batch 128 (global), SGD lr 0.1 decayed
  0.97 per epoch, momentum 0.9, weight decay 3e-5, label smoothing 0.1, auxiliary 0.4,
  gradient clipping 5, RandomResizedCrop 224 + flip + colour jitter 0.4 (no hue jitter),
  evaluation resize 256 / centre crop 224. DARTS_V2: 4.7 M parameters, 26.7% top-1 error in
  the paper. Scale out with ``--config.batch_size=1024 --config.lr_scaling=linear`` on a
  mesh of all devices of all hosts (``bin/train.py --distributed``).
* ``:quick`` embedded Fashion-MNIST 16x16 through ``NetworkImageNet`` (C=8, 5 cells, no
  auxiliary head: the maps are 1x1 where it sits): the code path in minutes on a CPU.
"""

from jaxdarts import config as config_lib
from jaxdarts import retrain

VARIANTS = ("quick",)


def get_config(arg: str = ""):
    c = retrain.base_config()
    c.network, c.dataset = "imagenet", "imagenet2012"
    c.data.update(image_size=224, augment=False, cutout=0, color_jitter=0.4, test_split="validation")
    c.model.update(C=48, layers=14, drop_path=0.0)
    c.batch_size = c.eval_batch_size = c.base_batch_size = 128
    c.lr, c.schedule, c.lr_gamma, c.weight_decay, c.label_smoothing, c.epochs = 0.1, "exponential", 0.97, 3e-5, 0.1, 250
    for v in config_lib.variants(arg, VARIANTS, "configs/retrain_imagenet.py"):
        if v == "quick":
            retrain.quick(c)
            c.data.update(image_size=16, augment=True, cutout=0, color_jitter=0.0, test_split="test")
            c.model.auxiliary = False  # at 16px the maps are 1x1 where the ImageNet head sits
    return c
