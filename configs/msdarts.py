"""MS-DARTS (mean-shift on the mixing weights for the weight step), reference settings.

Method ``msdarts`` (:mod:`jaxdarts.methods.msdarts`; section ``config.msdarts``), the code
``sota/cnn/train_search_ms.py`` of aaron851113/MS-DARTS: DARTS space, CIFAR-10 25k/25k,
C16 / 8 cells, batch 64, 40 epochs, SGD 0.025 -> 0.001 cosine, first-order Adam steps on
alpha from epoch 5, mean-shift with eps = 0.25 ramped eps/10 -> eps, h = 1.0 (a standard
deviation), N = 3 samples, T = 2 iterations, weights softmax of the training-batch losses
in eval-mode BatchNorm.

Commands and expected cost/result:

* ``python bin/search.py --config configs/msdarts.py:quick --workdir /tmp/msdarts_quick``
  Embedded Fashion-MNIST (16x16), C=8, 3 cells, 4 epochs x 20 steps of batch 32, alpha
  steps from epoch 1 (the quick search is too short for 5 warm-up epochs): about 2x the
  DARTS quick run on 2 CPU cores (each step adds N x T = 6 eval-mode forwards; the step
  measured 1.9x DARTS's, compile 170 s vs 110 s, in benchmarks/RESULTS.md); metrics
  ``ms_epsilon``, ``ms_shift``.
* ``python bin/search.py --config configs/msdarts.py --workdir /tmp/msdarts``: the paper's
  DARTS-space search (Table 1); ``:s1`` .. ``:s4`` the RobustDARTS spaces (Table 2; cutout
  16 forced on with the code's ramped probability and on the architecture batches, as the
  code).

The dominant eigenvalue of the architecture Hessian is tracked after every epoch
(``hessian_every=1``), as the code does: logged as ``eigenvalue`` (signed) and
``eigenvalue_abs`` (``|max eigenvalue|``, the code's figure). Not in ``:quick``: the dense
Hessian (64 Hessian-vector products at a time) of the quick supernet was killed for memory
at 22 GB on a 24 GB machine (2026-12-02); ``--config.hessian_every=1
--config.hessian_method=lanczos`` adds a Lanczos estimate there.

Variants (combinable, ``:s3,quick``): ``quick``, ``s1``..``s4``, ``paper`` (the paper's
choices where it differs from the code: validation-batch losses, weights proportional to
the loss, a clean simplex mean-shift: clipped average, clipped result), ``cifar100``.
Sweeps over h or eps without recompiling: ``benchmarks/msdarts_bandwidth.py``
(``Sweep('msdarts.bandwidth', ...)``).
"""

from jaxdarts import config as config_lib
from jaxdarts.configs.common import quick

SPACES = ("s1", "s2", "s3", "s4")
VARIANTS = ("quick", "paper", "cifar100") + SPACES


def robust_space(c, space):
    """A RobustDARTS space as MS-DARTS's ``train_search_ms.py`` searches it: cutout 16 forced
    on, probability ramped e/(E-1), on the architecture batches too (they go through the
    training transform, the default ``data.augment_val``)."""
    c.space = space
    c.data.cutout = 16
    c.regularization.ramp_cutout = True


def get_config(arg: str = ""):
    variants = config_lib.variants(arg, VARIANTS, "configs/msdarts.py")
    c = config_lib.base("msdarts")  # first order, 40 epochs, alpha steps from epoch 5
    c.hessian_every = 1  # the code computes the eigenvalue at the end of every epoch
    for v in variants:
        if v in SPACES:
            robust_space(c, v)
        elif v == "cifar100":
            c.dataset = "cifar100"
        elif v == "paper":
            c.msdarts.update(dict(loss_batch="val", omega="proportional", average="clipped", clip_result=True))
    if "quick" in variants:
        quick(c)
        c.arch_start_epoch = 1
        c.hessian_every = 0  # the dense Hessian needs > 20 GB at this size (docstring)
    return c
