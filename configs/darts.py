"""DARTS search (Liu et al., 2019) with the reference ``train_search.py`` settings.

Architecture batches go through the training transform (``data.augment_val``), as
``train_search.py``'s valid queue samples the training set with the training transform.

Commands and expected cost/result:

* ``python bin/search.py --config configs/darts.py:quick --workdir /tmp/darts_quick``
  Embedded Fashion-MNIST (16x16), C=8, 3 cells, 4 epochs x 20 steps of batch 32, first
  order: about 1 minute on 2 CPU cores (59-63 s with a cold compilation cache, the step
  compiled and ran once in 23-26 s, 1.9 GB peak RSS, 2026-12-02, 2026-12-02; PyTorch DARTS
  took 64-68 s for the same 80 steps; benchmarks/RESULTS.md);
  val accuracy ~0.6-0.7 after the 4th epoch.
* ``python bin/search.py --config configs/darts.py --workdir /tmp/darts``
  CIFAR-10 (prepared TFDS), first order, 50 epochs of 390 steps, batch 64: the paper's
  1.5 GPU-days version is the second order one; see benchmarks/RESULTS.md for step times.
* ``--config configs/darts.py:second_order`` exact unrolled second order (DARTS 2nd order
  but exact, ``jax.grad`` through the virtual step); ``:finite_difference`` is the
  reference's approximation, bit for bit.

Variants (``get_config(arg)``): ``''`` (first order, CIFAR-10), ``second_order``,
``finite_difference``, ``quick``, ``quick_second_order``. Any field can be overridden:
``--config.epochs=3 --config.estimator=unrolled``.
"""

from jaxdarts import config as config_lib
from jaxdarts.configs.common import quick


VARIANTS = ("quick", "second_order", "unrolled", "finite_difference", "quick_second_order")


def get_config(arg: str = ""):
    c = config_lib.base()
    for v in config_lib.variants(arg, VARIANTS, "configs/darts.py"):
        if v == "quick":
            quick(c)
        elif v in ("second_order", "unrolled"):
            c.estimator = "unrolled"
        elif v == "finite_difference":
            c.estimator = "finite_difference"
        elif v == "quick_second_order":
            quick(c)
            c.estimator = "unrolled"
    return c
