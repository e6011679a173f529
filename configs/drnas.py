"""DrNAS (Chen et al., ICLR 2021): architecture mixing weights drawn from Dirichlet distributions.

Method ``drnas`` (:mod:`jaxdarts.methods.drnas`; section ``config.drnas``), the code
``DARTS-space/train_search.py`` and ``201-space/train_search.py`` of xiangning-chen/DrNAS:
each forward draws the mixing weights from Dir(ELU(eta) + 1) (pathwise gradients), the
anchor regulariser is Adam weight decay 1e-3 on eta (``l2``, the code's default) or a KL
term to Dir(1) (``:kl``). DARTS space without ``none`` (7 ops), the supernet at the
evaluation size (C=36, 20 cells), partial channels K=4, batch 64, 50 epochs, architecture
steps from epoch 10, SGD lr 0.1 cosine to 0, Adam lr 6e-4; first order; both data halves
through the training transform. Progressive learning (K 6 -> 4, ops 7 -> 4 between two
25-epoch stages) is not reproduced: one stage at K=4 with all 7 ops.

Commands and expected cost/result:

* ``python bin/search.py --config configs/drnas.py:quick --workdir /tmp/drnas_quick``
  Embedded Fashion-MNIST (16x16), C=8, 3 cells, K=2, 4 epochs x 20 steps of batch 32,
  architecture steps from the second epoch: a few minutes on 2 CPU cores, most of it
  compiling; ``alpha_softmax`` is the Dirichlet mean.
* ``python bin/search.py --config configs/drnas.py:nb201,quick --workdir /tmp/drnas_nb201``:
  NAS-Bench-201 (C=8, one cell per stage), K=1; writes the NB201 string (``nb201_str``).
* ``python bin/search.py --config configs/drnas.py --workdir /tmp/drnas``: the paper's
  CIFAR-10 search (2.46% test error after retraining in the paper); ``:nb201`` its
  NAS-Bench-201 search (94.36% CIFAR-10 test accuracy in the paper's table).

Variants (combinable): ``quick``, ``nb201``, ``kl`` (the KL anchor, no Adam weight decay),
``cifar100``.
"""

from jaxdarts import config as config_lib
from jaxdarts.configs.common import quick

VARIANTS = ("quick", "nb201", "kl", "cifar100")


def get_config(arg: str = ""):
    variants = config_lib.variants(arg, VARIANTS, "configs/drnas.py")
    c = config_lib.base("drnas")  # darts_no_none, K=4, 50 epochs, alpha from epoch 10, lr 0.1 -> 0
    c.model.C, c.model.layers = 36, 20
    if "nb201" in variants:  # 201-space/train_search.py
        c.space = "nb201"
        c.model.C, c.model.layers = 16, 5
        c.model.partial_channels = 1
        c.epochs = 100
        c.arch_start_epoch = 0
        c.optim.update(lr=0.025, lr_min=0.001, arch_lr=3e-4)
    if "kl" in variants:
        c.drnas.reg_type = "kl"
        c.optim.arch_weight_decay = 0.0
    if "cifar100" in variants:
        c.dataset = "cifar100"
    if "quick" in variants:
        quick(c)
        c.arch_start_epoch = 1
        c.model.partial_channels = 1 if "nb201" in variants else 2
        if "nb201" in variants:
            c.model.layers = 1
    return c
