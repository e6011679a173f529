"""Every method on equal terms against a ground truth (:mod:`jaxdarts.compare`).

``bin/compare.py`` runs each registered method (its own defaults: the config file whose
``:quick`` variant runs it) and two baselines (random search at the cost of one search;
Zero-cost NAS with Synflow) for several seeds on one protocol, looks every epoch's derived
architecture up in a ground truth of the whole space and writes ``leaderboard.json``,
``leaderboard.md`` and ``leaderboard.html`` in the workdir. Re-running the command resumes
(each run is an ordinary search workdir under ``runs/<method>/seed_<s>``).

Protocol ``s5`` (the default, the *short budget*): RobustDARTS's S5 (81 architectures) on
the embedded Fashion-MNIST at 16x16 (crop padding 2), the search network of the ground
truth (C=8, 5 cells; ``benchmarks/s5_ground_truth.py`` trains each of the 81 as this
network's discrete form), batch 64, 10 epochs x 20 steps (12,800 weight-step images per
search), search seeds 0-9. Protocol ``s5,long`` (the *long budget*, where DARTS's drift to
parameter-free cells appeared in a 20-epoch S5 run): 25 epochs x 40 steps, seeds 0-4.

The leaderboard reports every mean with a two-level bootstrap interval (search seeds and
ground-truth seeds), the probability of each rank and the entries that cannot be told apart
(:mod:`jaxdarts.bootstrap`); regret is measured against the best cell chosen on held-out
ground-truth seeds.

Commands and expected cost/result:

* ``python bin/compare.py --config configs/compare.py:s5 --workdir /tmp/compare_s5``
  every method and both baselines, 10 seeds: about 3.5 hours on 2 CPU cores (the 3-seed
  run of 2026-12-02 took about an hour); re-running resumes.
* ``python bin/compare.py --config configs/compare.py:s5,long --workdir /tmp/compare_s5_long``
  the long budget, 5 seeds: about 5 times the short one per seed (not yet measured).
* ``python bin/compare.py --config configs/compare.py:s5 --workdir /tmp/c --config.methods="('darts', 'drnas')"``
  a subset (``methods=()`` is every registered method); ``--config.seeds="(0, 1, 2, 3, 4)"`` more seeds;
  ``--config.variants="('stacnas:one_stage', 'robustdarts:es', 'robustdarts:dp')"`` adds DARTS-ES and R-DARTS.
* ``python bin/compare.py --config configs/compare.py:tiny --workdir /tmp/compare_tiny``
  a smoke run (tiny network, 2 epochs of 2 steps, one seed; the tests run it): regrets
  of a network much smaller than the ground truth's, so meaningless as a result.

Variants: ``s5``, ``long``, ``nb201``, ``tiny``.
"""

import ml_collections

from jaxdarts import config as config_lib

VARIANTS = ("s5", "long", "nb201", "tiny")


def get_config(arg: str = ""):
    c = ml_collections.ConfigDict()
    c.methods = ()  # () = every registered method (jaxdarts.methods.names())
    # method:variant entries (a variant of a method's config file, through its run driver) after the methods (robustdarts:es is
    # DARTS-ES, robustdarts:dp R-DARTS; stacnas:one_stage is StacNAS's one-level stage alone: S5 has no 'none')
    c.variants = ("stacnas:one_stage",)
    c.baselines = ("random", "synflow")
    c.seeds = tuple(range(10))  # >= 10 search seeds: the bootstrap's intervals need them
    c.ground_truth = "s5_fashion_mnist"  # jaxdarts.compare.GROUND_TRUTHS, or a path to a .json table
    c.synflow_candidates = 0  # Zero-cost NAS scores every architecture of the space (N > 0: N drawn per seed)
    c.protocol = ml_collections.ConfigDict(dict(
        dataset="fashion_mnist", space="s5", data_image_size=16, data_max_examples=0, model_C=8, model_layers=5,
        batch_size=64, epochs=10, steps_per_epoch=20, eval_batches=4,
        data_crop_padding=2))  # CIFAR's 4 of 32 pixels in proportion
    # per method (or method:variant), fields set on top of its own defaults and the protocol, nested:
    # e.g. {"darts": {"estimator": "unrolled"}, "balenas": {"balenas": {"num_candidates": 20}}}
    c.overrides = ml_collections.ConfigDict()
    for v in config_lib.variants(arg, VARIANTS, "configs/compare.py"):
        if v == "long":  # a budget where DARTS's drift can happen (it began after epoch 10 of 20 x 40 steps)
            c.seeds = tuple(range(5))
            c.protocol.update(dict(epochs=25, steps_per_epoch=40))
        elif v == "nb201":  # NAS-Bench-201 on CIFAR-10 against the optional accuracy table (jaxdarts.nb201)
            c.ground_truth = "nb201"
            c.synflow_candidates = 1000
            c.protocol.update(dict(dataset="cifar10", space="nb201", data_image_size=32, data_crop_padding=4,
                                   model_C=16, model_layers=5, batch_size=64, epochs=50, steps_per_epoch=0,
                                   eval_batches=10))
        elif v == "tiny":
            c.seeds = (0,)
            c.protocol.update(dict(data_image_size=8, data_max_examples=256, model_C=4, model_layers=3, batch_size=8,
                                   epochs=2, steps_per_epoch=2, eval_batches=1))
            c.protocol.model_depthwise = "conv"  # the compact lowering: a smoke run is mostly compiling
            # BaLeNAS-TF over 4 draws scored by a one-cell network (its 100 draws: a minute of compiling)
            c.overrides.balenas = {"balenas": {"num_candidates": 4, "tf": {"layers": 1, "fast_compile": True}}}
    return c
