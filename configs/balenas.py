"""BaLeNAS (VAdam over architecture distributions) with training-free selection.

Architecture batches go through the training transform (``data.augment_val``), as the
BaLeNAS/iDARTS code's valid queue (DARTS's ``train_search.py``) and AutoDL's NAS-Bench-201
search data do.

Commands and expected cost/result:

* ``python bin/search.py --config configs/balenas.py:quick --workdir /tmp/balenas_quick``
  Embedded Fashion-MNIST (16x16), DARTS space at C=8 with 3 cells, 4 epochs x 20 steps of
  batch 32, BaLeNAS 1st order (one sample per step), then BaLeNAS-TF: 20 architectures drawn
  from q(mu, sigma^2), scored with Synflow, the best written to genotype.json (argmax mu as
  ``last_genotype``). 1 min 29 s on 2 CPU cores without a compilation cache (2026-12-02,
  2026-12-02: the step compiled and ran once in 33 s, Synflow scoring 16 s; 3 min 36 s
  that morning); sigma stays ~0.8-1 (N = 1,280 architecture images).
* ``--config configs/balenas.py:nb201,quick``: the same on NAS-Bench-201 (C=8, one cell per
  stage); writes the NB201 string of the selected cell (``nb201_str``); 1 min 32 s.
* ``python bin/search.py --config configs/balenas.py --workdir /tmp/balenas`` the paper's
  DARTS-space setting (Table 3): CIFAR-10 (prepared TFDS), C16 / 8 cells, 50 epochs of
  batch 64, exact second order (``unrolled``; ``--config.estimator=finite_difference`` is the
  reference's approximation), VAdam (lr 3e-4, betas (0.5, 0.999), prior 1, N = 25,000),
  BaLeNAS-TF with Synflow over 100 draws. Cost: about 2x a first-order DARTS search.
* ``:nb201``: NAS-Bench-201 on CIFAR-10 with AutoDL-Projects' DARTS protocol (C16, N=5, 50
  epochs, batch 64, Nesterov SGD 0.025 -> 0.001 cosine per iteration, weight decay 5e-4,
  clip 5, 25k/25k split), BaLeNAS 1st order, Synflow over 100 draws at the CIFAR input
  shape with the zero-cost-proxy network (Table 1/2). With the optional
  ``analog-nasbench`` table installed the run also reports the tabulated CIFAR-10 accuracy of
  the selected cell (:mod:`jaxdarts.nb201`).

Variants (combinable, ``:nb201,quick``): ``nb201``, ``quick``, ``argmax`` (BaLeNAS without TF
selection), ``first_order``, ``paper_vadam`` (Eq. 17-18 instead of the reference's VAdam),
``reference_noise`` (2nd order with the reference's noise in the mixed term only).
Selection: ``--config.balenas.selection=snip`` (``argmax``, ``synflow``, ``snip``, ``grasp``),
``--config.balenas.num_candidates=50``. The scored network (``balenas.tf.network``, not
named by the paper): ``auto`` (default) is the zero-cost-proxy code's ``NAS201Model`` on
NAS-Bench-201 and ``NetworkCIFAR``'s cells in the DARTS space; ``eval``/``search`` force the
evaluation or the search network's cells (identical Synflow scores in the DARTS space).
"""

from jaxdarts import config as config_lib
from jaxdarts.configs.common import quick

VARIANTS = ("nb201", "quick", "argmax", "first_order", "paper_vadam", "reference_noise")


def get_config(arg: str = ""):
    variants = config_lib.variants(arg, VARIANTS, "configs/balenas.py")
    c = config_lib.base("balenas")
    c.estimator = "unrolled"
    c.balenas.selection = "synflow"
    c.balenas.num_candidates = 100
    if "nb201" in variants:
        c.space = "nb201"
        # BaLeNAS 1st order (Tables 1-2); --config.estimator=unrolled (or finite_difference) is the
        # 2nd-order row: its virtual step is heavy-ball SGD under Nesterov, as AutoDL's DARTS-V2
        c.estimator = "first_order"
        c.model.C, c.model.layers = 16, 5
        c.optim.update(nesterov=True, lr_schedule="step_cosine", weight_decay=5e-4, lr=0.025, lr_min=0.001)
        c.balenas.tf.input_size = 32  # the proxy network at CIFAR's input shape
    if "quick" in variants:
        quick(c)
        c.estimator = "first_order"
        c.balenas.num_candidates = 20
        c.balenas.tf.fast_compile = True  # 20 candidates: XLA's passes cost more than they save
        if "nb201" in variants:
            c.model.layers = 1
            c.balenas.tf.input_size = 0
    if "argmax" in variants:
        c.balenas.selection = "argmax"
    if "first_order" in variants:
        c.estimator = "first_order"
    if "paper_vadam" in variants:
        c.balenas.vadam.form = "paper"
    if "reference_noise" in variants:
        if c.estimator == "first_order":
            c.estimator = "finite_difference"
        c.balenas.vadam.noise_scope = "mixed_term_only"
    return c
