"""StacNAS: one-level simultaneous search, stage 1 on group representatives, stage 2 on
the activated groups (grouped backward pruning). Method ``stacnas``
(:mod:`jaxdarts.methods.stacnas`; section ``config.stacnas``).

Reference settings (susan0199/StacNAS ``config.py``, README, ``run_all.py``): CIFAR-10,
all 50k training images for weights and alpha (``data.train_portion=1``), C16, stage 1 on
14 cells, stage 2 on 20 cells, 80 epochs per stage, batch 64, SGD 0.025 -> 0.001 cosine,
momentum 0.9, weight decay 3e-4, gradient clipping 3 (weights only), Adam 3e-4 (0.5,
0.999) with weight decay 1e-3 on alpha, crop + flip, no cutout, shared alpha, the skip
listed twice in its stage-2 group, the final edges ranked by raw logits.

One-level: weights and alpha are trained on the same augmented training batches (crop +
flip, ``train_ratio=1``); there is no architecture split, so ``data.augment_val`` has no
effect.

Commands and expected cost/result:

* ``python bin/search.py --config configs/stacnas.py:quick --workdir /tmp/stacnas_quick``
  Embedded Fashion-MNIST (16x16), C=8, stage 1 on 5 cells and stage 2 on 8 cells, 3 epochs
  x 20 steps of batch 32 each: a few minutes on 2 CPU cores (benchmarks/RESULTS.md has the
  measured time); writes stage1.json (the activated group of every edge), stage1/ and
  stage2/ (each a resumable search) and genotype.json. Re-running resumes the interrupted
  stage; ``--max_epochs N`` counts epochs across both stages.
* ``python bin/search.py --config configs/stacnas.py --workdir /tmp/stacnas``: the paper's
  CIFAR-10 search (two stages of 80 epochs).

Variants (combinable): ``quick``, ``per_cell`` (every stage-1 cell its own alpha),
``paper`` (the paper's choices: 100 epochs, ranking by softmax, one skip in its group),
``cifar100``, ``one_stage`` (stage 1 alone, the one-level simultaneous step without
grouping: an ablation that runs on any space; ``bin/compare.py`` runs it on S5).
"""

from jaxdarts import config as config_lib
from jaxdarts.configs.common import quick

VARIANTS = ("quick", "per_cell", "paper", "cifar100", "one_stage")


def get_config(arg: str = ""):
    variants = config_lib.variants(arg, VARIANTS, "configs/stacnas.py")
    c = config_lib.base("stacnas")
    if "paper" in variants:
        c.epochs = 100
        c.stacnas.rank_by = "softmax"
        c.stacnas.stage2_skip = "dedupe"
    if "cifar100" in variants:
        c.dataset = "cifar100"
    if "one_stage" in variants:  # stage 1 alone on config.space with model.layers cells (an ablation)
        c.stacnas.stage2_layers = 0
    if "per_cell" in variants:
        c.stacnas.alpha_share = False
    if "quick" in variants:
        quick(c, layers=5)
        c.epochs = 3
        c.stacnas.stage1_layers = 5
        c.stacnas.stage2_layers = 0 if "one_stage" in variants else 8
    return c
