"""RobustDARTS (Zela et al., 2020): eigenvalue tracking, DARTS-ES, DARTS-ADA, R-DARTS.

Method ``robustdarts`` (:mod:`jaxdarts.methods.robustdarts`; its section is
``config.robustdarts``). Reference-script defaults: spaces S1-S4, second order (here:
exact ``unrolled``), cutout 16 during search, the dominant Hessian eigenvalue every 2
epochs, early stopping with the reference code's rule (window 5, every 2 epochs, from
epoch 10, delta 4, factor 1.3; ``robustdarts.early_stopping.mode='paper'`` for Section
4.2's rule), 50 epochs, batch 64. The R-DARTS sweeps (``dp``, ``l2``) run without
eigenvalue tracking (hooks act on one search).

Variants, combinable with commas: ``es`` (DARTS-ES), ``ada`` (DARTS-ADA on weight
decay: x10 per trigger, from 3e-4 up to 3e-2), ``dp`` (R-DARTS over drop-path
{0, 0.2, 0.4, 0.6}), ``l2`` (R-DARTS over weight decay 3e-4 x {1, 3, 9, 27, 81}), a space
(``s1``..``s5``/``darts``), a dataset (``cifar10``, ``cifar100``, ``svhn``),
``first_order``, and ``quick``.

Commands and expected cost/result:

* ``python bin/search.py --config configs/rdarts.py:es,quick --workdir /tmp/rdarts_es``
  S1-quick on embedded Fashion-MNIST: 1 min 8 s on 2 CPU cores (2026-11-30; 1 min 19 s
  with a cold compilation cache in session 4); metrics.jsonl has ``eigenvalue`` every epoch and, when the
  rule fires (here at epoch index 1), ``es_trigger``; genotype.json holds the architecture
  of the epoch ES returns.
* ``python bin/search.py --config configs/rdarts.py:dp,quick --workdir /tmp/rdarts_dp``
  four searches in one vmapped program plus selection by 2-epoch retraining: 2 min 43 s
  (2026-11-30); writes rdarts.json, selection.json and genotype.json (the chosen
  candidate). Re-running the command resumes the sweep (and the selection); on a finished
  workdir it only rewrites the results (7 s). ``--max_epochs N`` stops after N more
  search epochs.
* ``python bin/search.py --config configs/rdarts.py:es,s3,cifar100 --workdir ...``: the paper.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import quick  # noqa: E402

from jaxdarts import config as config_lib  # noqa: E402

SPACES = ("s1", "s2", "s3", "s4", "s5", "darts")
DATASETS = ("cifar10", "cifar100", "svhn")


def get_config(arg: str = ""):
    c = config_lib.base("robustdarts")
    r = c.robustdarts
    c.space = "s1"
    c.estimator = "unrolled"
    c.data.cutout = 16
    c.hessian_every = 2
    is_quick = False
    for v in [v for v in arg.split(",") if v]:
        if v == "es":
            r.early_stopping.mode = "code"
        elif v == "ada":
            r.early_stopping.mode = "code"
            r.early_stopping.ada = True
        elif v == "dp":
            r.sweep.target, r.sweep.grid = "drop_path", (0.0, 0.2, 0.4, 0.6)
        elif v == "l2":
            r.sweep.target, r.sweep.grid = "weight_decay", tuple(3e-4 * 3 ** i for i in range(5))
        elif v in SPACES:
            c.space = v
        elif v in DATASETS:
            c.dataset = v
        elif v == "first_order":
            c.estimator = "first_order"
        elif v == "quick":
            is_quick = True
        else:
            raise ValueError(f"unknown variant {v!r} of configs/rdarts.py; accepted: es, ada, dp, l2, first_order, "
                             f"quick, {', '.join(SPACES + DATASETS)}")
    if is_quick:
        quick(c)
        c.estimator = "first_order" if c.estimator == "unrolled" else c.estimator
        c.epochs = 6
        c.steps_per_epoch = 10
        c.hessian_every = 1
        r.early_stopping.update(dict(window=2, delta=1, start_epoch=1, factor=1.05))
        r.select.update(dict(epochs=2, C=8, layers=3))
    if r.sweep.target != "none":
        c.hessian_every = 0  # the sweep runs without per-epoch hooks
    return c
