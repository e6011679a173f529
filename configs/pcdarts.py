"""PC-DARTS (Xu et al., ICLR 2020): partial channel connections and edge normalisation.

Method ``pcdarts`` (:mod:`jaxdarts.methods.pcdarts`; section ``config.pcdarts``), the code
``train_search.py`` of yuhuixu1993/PC-DARTS: DARTS space (8 ops), CIFAR-10 25k/25k, C16 /
8 cells, batch 256, 50 epochs; each edge's ops on the first C/4 channels (the rest bypass
them, then a channel shuffle), each node's edges weighted by a softmax of per-edge betas;
first-order Adam steps on alpha and betas from epoch 15 (lr 6e-4, weight decay 1e-3), SGD
lr 0.1 cosine to 0 on the weights; both data halves through the training transform, no
cutout. Derivation: DARTS's top-2 rule on softmax(alpha) times the edge weights.

Commands and expected cost/result:

* ``python bin/search.py --config configs/pcdarts.py:quick --workdir /tmp/pcdarts_quick``
  Embedded Fashion-MNIST (16x16), C=8, 3 cells, K=2 (C=8 leaves 2 channels per op at K=4),
  4 epochs x 20 steps of batch 32, architecture steps from the second epoch: a few minutes
  on 2 CPU cores, most of it compiling (the ops run on half the channels: a cheaper step
  than DARTS's); metrics as DARTS's: ``alpha_softmax`` is softmax(alpha) per edge, without
  the edge weights (each node's softmax of its betas), which the derivation multiplies in.
* ``python bin/search.py --config configs/pcdarts.py --workdir /tmp/pcdarts``: the paper's
  CIFAR-10 search (0.1 GPU-days in the paper; 2.57% test error after retraining).
* ``:imagenet``: the ImageNet search's settings that fit one program (K=2, batch 1024, lr
  0.5, Adam lr 6e-3 from epoch 35; the 10%/2.5% subsets, the 3-conv stem, the LR warm-up and
  the architecture-gradient clipping are not reproduced).

Variants (combinable): ``quick``, ``no_edge_norm`` (partial channels only), ``cifar100``,
``imagenet``.
"""

from jaxdarts import config as config_lib
from jaxdarts.configs.common import quick

VARIANTS = ("quick", "no_edge_norm", "cifar100", "imagenet")


def get_config(arg: str = ""):
    variants = config_lib.variants(arg, VARIANTS, "configs/pcdarts.py")
    c = config_lib.base("pcdarts")  # K=4, batch 256, 50 epochs, alpha from epoch 15, lr 0.1 -> 0
    if "no_edge_norm" in variants:
        c.pcdarts.edge_normalization = False
    if "cifar100" in variants:
        c.dataset = "cifar100"
    if "imagenet" in variants:
        c.dataset = "imagenet2012"
        c.model.partial_channels = 2
        c.batch_size = 1024
        c.optim.lr, c.optim.arch_lr = 0.5, 6e-3
        c.arch_start_epoch = 35
    if "quick" in variants:
        quick(c)
        c.model.partial_channels = 2
        c.arch_start_epoch = 1
    return c
