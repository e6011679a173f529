"""Amended-DARTS (Bi et al.): the amended architecture gradient (Eq. 7), eta = 0.1.

Paper settings: Adam lr 3e-4, weight decay 1e-3, betas (0.5, 0.999), batch 96, 100
epochs, C=16 (Section 4.1.1). ``:s1`` is the consistent search of Section 4.1.2: fixed
edges (node i <- node i-1, c_{k-2}; 8 edges), C=36, cutout 16, drop-path 0.2 and the
auxiliary tower during search; drop-path acts on each op output as in the evaluation
network (``regularization.drop_path_scope='op'``; RobustDARTS drops whole mixed-op
outputs). ``:s2`` is Section 4.1.3: 20 cells, one alpha per cell,
{skip_connect, sep_conv_3x3}.

Architecture batches go through the training transform (``data.augment_val``), as the
DARTS ``train_search.py`` the method builds on.

Commands and expected cost/result:

* ``python bin/search.py --config configs/amended.py:quick --workdir /tmp/amended_quick``
  amended_s1 space on embedded Fashion-MNIST 16x16, C=8, 3 cells, 4 x 20 steps. On 2 CPU
  cores: 5 min 25 s in all from a fresh clone with a cold compilation cache, most of it
  compiling the step (a Hessian-vector product and a mixed second derivative through the
  8-op supernet), then ~1 step/s; 8.2 GB peak RSS (benchmarks/RESULTS.md). metrics.jsonl
  has ``g1_norm`` and ``g2_norm`` (the amending term) per epoch; val accuracy ~0.55.
* ``--config configs/amended.py:s1`` / ``:s2`` on prepared CIFAR-10: the paper's runs (a GPU
  is needed; CPU step times in benchmarks/RESULTS.md).
* add ``--config.diagnose=True`` to log each estimator's cosine to ``implicit`` per epoch.
"""

from jaxdarts import config as config_lib
from jaxdarts.configs.common import quick


VARIANTS = ("s1", "s2", "quick")


def get_config(arg: str = ""):
    c = config_lib.base("amended")  # estimator 'amended', eta = 0.1
    c.batch_size = 96
    c.epochs = 100
    for v in config_lib.variants(arg, VARIANTS, "configs/amended.py"):
        if v == "s1":
            c.space = "amended_s1"
            c.model.C = 36
            c.model.auxiliary = True
            c.data.cutout = 16
            c.regularization.drop_path = 0.2
            c.regularization.drop_path_scope = "op"
        elif v == "s2":
            c.space = "amended_s2"
            c.model.layers = 20
        elif v == "quick":
            c.space = "amended_s1"
            quick(c)
    return c
