"""RobustDARTS (Zela et al., 2020): eigenvalue tracking, DARTS-ES, DARTS-ADA, R-DARTS.

Method ``robustdarts`` (:mod:`jaxdarts.methods.robustdarts`; its section is
``config.robustdarts``). Reference-code defaults (``src/search/args.py``,
``train_search.py``): spaces S1-S4, second order (here: exact ``unrolled``), 50 epochs,
batch 64; the dominant Hessian eigenvalue after epochs 0, 2, 4, ... and the last, on the
epoch's last architecture batch in training mode with the search's augmentation and
drop-path; early stopping with the code's rule (``EVLocalAvg``: window 5, delta 4, factor
1.3, start epoch 10; tested from epoch 22, returns 12 epochs back);
``robustdarts.early_stopping.mode='paper'`` (variant ``paper_rule``) for Section 4.2's
rule. Search regularisation as the code applies it: drop-path on each mixed-op output
(skip and noise included), ramped 0 -> max; cutout 16 only where the maximum drop-path is
> 0 (so not in ES, ADA, L2 runs or the dp=0 arm of the DP sweep), with probability 1: the
paper ramps the cutout probability, the code sets a ramped attribute that its ``Cutout``
never reads (``--config.regularization.ramp_cutout=True`` for the paper's ramp).
Architecture batches are training images through the training transform (crop, flip,
cutout where on; ``data.augment_val``); SVHN is flipped as in the code
(``data.flip='on'``). The R-DARTS sweeps (``dp``, ``l2``) run without eigenvalue
tracking (hooks act on one search).

Variants, combinable with commas: ``es`` (DARTS-ES), ``ada`` (DARTS-ADA on weight
decay: x10 per trigger, from 3e-4 up to 3e-2, as the paper's C.1 and the published
scripts; ``args.py``'s defaults x3 up to 243e-4:
``--config.robustdarts.early_stopping.ada_factor=3
--config.robustdarts.early_stopping.ada_max=0.0243``; triggers past the maximum are
ignored and the search runs to its budget), ``paper_rule``, ``dp`` (R-DARTS
over drop-path {0, 0.2, 0.4, 0.6}), ``l2`` (R-DARTS over weight decay 3e-4 x {1, 3, 9,
27, 81}), a space (``s1``..``s5``, ``darts``; ``s5`` is the paper's 81-architecture space,
the code's ``s5`` is ``darts``), a dataset (``cifar10``, ``cifar100``, ``svhn``),
``first_order``, and ``quick``.

Commands and expected cost/result:

* ``python bin/search.py --config configs/rdarts.py:es,quick --workdir /tmp/rdarts_es``
  S1-quick on embedded Fashion-MNIST: 1 min 21 s on 2 CPU cores, 6.2 GB peak RSS
  (2026-11-30); metrics.jsonl has ``eigenvalue`` every epoch (quick:
  ``hessian_every=1``) and, when the rule fires (here at epoch index 3, returning epoch
  1), ``es_trigger``; genotype.json holds the architecture of the epoch ES returns.
* ``python bin/search.py --config configs/rdarts.py:dp,quick --workdir /tmp/rdarts_dp``
  four searches in one vmapped program plus selection by 2-epoch retraining: 2 min 43 s
  (2026-11-30); writes rdarts.json, selection.json and genotype.json (the chosen
  candidate). Re-running the command resumes the sweep (and the selection); on a finished
  workdir it only rewrites the results (7 s). ``--max_epochs N`` stops after N more
  search epochs.
* ``python bin/search.py --config configs/rdarts.py:es,s3,cifar100 --workdir ...``: the paper.
"""

from jaxdarts import config as config_lib
from jaxdarts.configs.common import quick

SPACES = ("s1", "s2", "s3", "s4", "s5", "darts")
DATASETS = ("cifar10", "cifar100", "svhn")
VARIANTS = ("es", "ada", "paper_rule", "dp", "l2", "first_order", "quick") + SPACES + DATASETS


def get_config(arg: str = ""):
    c = config_lib.base("robustdarts")
    r = c.robustdarts
    c.space = "s1"
    c.estimator = "unrolled"
    c.data.cutout = 16
    c.data.augment_val = True
    c.data.flip = "on"
    c.regularization.cutout_needs_drop_path = True
    c.hessian_every = 2
    is_quick = False
    for v in config_lib.variants(arg, VARIANTS, "configs/rdarts.py"):
        if v in ("es", "ada"):
            if r.early_stopping.mode == "none":  # paper_rule may have chosen the rule
                r.early_stopping.mode = "code"
            r.early_stopping.ada = r.early_stopping.ada or v == "ada"
        elif v == "paper_rule":
            r.early_stopping.mode = "paper"
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
