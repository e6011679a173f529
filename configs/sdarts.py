"""SDARTS-RS / SDARTS-ADV (Chen & Hsieh, 2020), the baselines of MS-DARTS.

Method ``sdarts`` (:mod:`jaxdarts.methods.sdarts`; section ``config.sdarts``), the code
``sota/cnn/train_search.py`` of xiangning-chen/SmoothDARTS: DARTS space, CIFAR-10
25k/25k, C16 / 8 cells, batch 64, 50 epochs, first-order Adam steps on alpha from the
first epoch, the weight step at perturbed softmax(alpha): ``rs`` uniform noise in the
eps box, clipped onto the simplex; ``adv`` 7 steps of projected sign-gradient ascent in
eval mode from a random start, kept only when it raised the loss; eps ramped 0.03 -> 0.3.

Commands and expected cost/result:

* ``python bin/search.py --config configs/sdarts.py:rs,quick --workdir /tmp/sdarts_rs``
  Embedded Fashion-MNIST (16x16), C=8, 3 cells, 4 epochs x 20 steps of batch 32: about the
  DARTS quick run (one uniform draw per step: 1.24x the DARTS step on an idle machine;
  3 min 16 s measured on 2 cores with a benchmark running alongside, most of it
  compiling); metrics ``sdarts_epsilon``,
  ``perturb_linf``; val accuracy ~0.5.
* ``python bin/search.py --config configs/sdarts.py:adv,quick --workdir /tmp/sdarts_adv``
  the same with the attack: 7 extra forward+backward passes per step (2.3x the DARTS step; 3 min 58 s measured
  as the run above; step cost in benchmarks/RESULTS.md); metrics ``adv_reverted``,
  ``adv_loss_gain``.
* ``python bin/search.py --config configs/sdarts.py:adv --workdir /tmp/sdarts_adv``: the
  paper's search; ``:s1`` .. ``:s4`` the RobustDARTS spaces.

As the SmoothDARTS code: the DARTS space without ``none`` (``darts_no_none``: 'none' is
commented out of ``sota/cnn/spaces.py``'s PRIMITIVES; ``--config.space=darts`` for the
8-op space), no cutout (``--cutout`` defaults to False and its commands do not pass it;
unlike MS-DARTS's ``train_search_ms.py``, which forces it for S1-S4), architecture
batches through the training transform (the valid queue samples the training set).

Variants (combinable): ``rs`` (default) | ``adv``, ``quick``, ``s1``..``s4``, ``cifar100``.
"""

from jaxdarts import config as config_lib
from jaxdarts.configs.common import quick
from jaxdarts.configs.msdarts import SPACES

VARIANTS = ("rs", "adv", "quick", "cifar100") + SPACES


def get_config(arg: str = ""):
    variants = config_lib.variants(arg, VARIANTS, "configs/sdarts.py")
    c = config_lib.base("sdarts")  # first order, 50 epochs
    c.space = "darts_no_none"
    for v in variants:
        if v in ("rs", "adv"):
            c.sdarts.kind = v
        elif v in SPACES:
            c.space = v  # no cutout: SmoothDARTS does not force it
        elif v == "cifar100":
            c.dataset = "cifar100"
    if "quick" in variants:
        quick(c)
    return c
