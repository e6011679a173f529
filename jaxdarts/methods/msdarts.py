"""MS-DARTS (Hsieh et al.): the weight step at mean-shifted mixing weights (Alg. 1-2).

Each step (``alpha_first``, as the reference ``sota/cnn/train_search_ms.py``):

1. From epoch ``cfg.arch_start_epoch`` (5 in the DARTS-space reference) a first-order
   DARTS step on alpha (Adam on ``d_alpha L_val``; ``cfg.estimator`` may be changed).
2. Mean-shift (:func:`jaxdarts.perturb.mean_shift`) from ``softmax(alpha)`` on the per-edge
   simplex: ``msdarts.iterations`` (T) iterations of ``msdarts.num_samples`` (N) samples
   ``x_n = c + U(-eps, eps)`` (padded slots untouched), clipped onto the simplex
   (:func:`jaxdarts.perturb.clip_simplex`), their losses as ONE batched evaluation
   (``vmap``; ``sample_eval='map'`` for one at a time), weights ``softmax(L)`` times a
   Gaussian kernel of standard deviation ``h`` per alpha tensor, computed in log space (the
   reference's direct ratio underflows to 0/0 for small ``h`` or large tensors).
3. One SGD step of the weights at the mean-shifted weights (training batch, training-mode
   BatchNorm); alpha (the logits) is not changed by 2-3.

The radius ramps ``eps/10 -> eps`` over the search (``eps_schedule='ms'``, the code:
``eps/10 + 0.9 eps e/E``, never reaching eps); radius, bandwidth and temperature are traced
schedule values (``ms_epsilon``, ``ms_bandwidth``, ``ms_temperature`` in every epoch's
metrics), so ``Sweep('msdarts.bandwidth', ...)`` / ``'msdarts.epsilon'`` run as one
compiled program. Per-step metrics (epoch means): ``ms_shift`` (L2 distance of the
mean-shifted weights from softmax(alpha)) and ``ms_sample_loss``.

Paper vs code (``../shared/METHODS_SPEC.md`` 1.6); defaults are the code's:

* ``loss_batch``: ``'train'`` (code: the weight step's training batch) | ``'val'`` (the
  paper's "validation loss": the architecture batch).
* ``omega``: ``'softmax'`` (code, temperature ``omega_temperature`` = 1; with CE losses
  that differ by ~0.01 nearly uniform) | ``'proportional'`` (paper: omega_p = L_p / sum L).
* ``average``: ``'unclipped'`` (code: the weighted mean of the unclipped samples, while the
  losses and the kernel use the clipped ones) | ``'clipped'``; ``clip_result=False`` (code:
  the result may leave the simplex slightly) | True.
* ``loss_bn``: ``'eval'`` (code: running statistics) | ``'train'`` (batch statistics).
* ``bandwidth`` is a standard deviation (Eq. 11 and the code), not a variance (Eq. 13-14).
* The shift acts on softmax(alpha) (code, as SDARTS), not on the logits the paper writes.
* Alg. 1 as typeset updates the centre inside the sample loop; the code (and this) once per
  iteration after all N samples.
* Epochs: 40 in the DARTS space (paper and code); NAS-Bench-1shot1 100 (paper) vs 80
  (code). Cutout: the code forces it on for the RobustDARTS spaces S1-S4 (the configs'
  ``s1``-``s4`` variants do).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jaxdarts import perturb
from jaxdarts.contract import Method, Mix, check_choice, check_positive
from jaxdarts.methods import _simplex


def config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        epsilon=0.25, eps_schedule="ms",  # ms (eps/10 -> eps) | sdarts (0.03 -> eps) | const
        bandwidth=1.0,  # h, the kernel's standard deviation
        num_samples=3, iterations=2,  # N, T
        loss_batch="train",  # train (code) | val (paper)
        omega="softmax", omega_temperature=1.0,  # softmax (code) | proportional (paper)
        average="unclipped", clip_result=False,  # code; clipped / True: a clean simplex mean-shift
        loss_bn="eval",  # eval (code) | train
        sample_eval="vmap"))  # vmap (one batched evaluation) | map (one sample at a time)


def defaults(cfg) -> None:
    cfg.estimator = "first_order"
    cfg.epochs = 40
    cfg.arch_start_epoch = 5


def validate(cfg) -> None:
    c = cfg.msdarts
    check_choice("msdarts.eps_schedule", c.eps_schedule, perturb.EPS_SCHEDULES)
    check_choice("msdarts.loss_batch", c.loss_batch, ("train", "val"))
    check_choice("msdarts.omega", c.omega, perturb.OMEGAS)
    check_choice("msdarts.average", c.average, perturb.AVERAGES)
    check_choice("msdarts.loss_bn", c.loss_bn, _simplex.LOSS_BNS)
    check_choice("msdarts.sample_eval", c.sample_eval, perturb.SAMPLE_EVALS)
    check_choice("msdarts.clip_result", c.clip_result, (False, True))
    for f in ("epsilon", "bandwidth", "omega_temperature"):
        check_positive(f"msdarts.{f}", c[f])
    for f in ("num_samples", "iterations"):
        check_positive(f"msdarts.{f}", c[f], integer=True)


def schedule(c, epoch: int, epochs: int) -> dict:
    return {"ms_epsilon": perturb.epsilon_schedule(c.eps_schedule, c.epsilon, epoch, epochs),
            "ms_bandwidth": c.bandwidth, "ms_temperature": c.omega_temperature}


def mix(ctx, state) -> Mix:
    c, task, sched = ctx.config, ctx.task, ctx.sched
    center = _simplex.clean_weights(task, state)
    mk = _simplex.masks(task.space)
    batch = ctx.weight_batch if c.loss_batch == "train" else ctx.arch_batch
    loss = _simplex.loss_at_weights(task, state, batch, c.loss_bn)
    noise = perturb.uniform_noise(ctx.key, center, (c.iterations, c.num_samples), mk)
    w, info = perturb.mean_shift(center, loss, noise, epsilon=sched["ms_epsilon"], bandwidth=sched["ms_bandwidth"],
                                 mask=mk, omega=c.omega, temperature=sched["ms_temperature"], average=c.average,
                                 clip_result=c.clip_result, sample_eval=c.sample_eval)
    w = jax.lax.stop_gradient(w)
    shift, _ = _simplex.distance(w, center)
    return Mix(w, {"ms_shift": shift, "ms_sample_loss": jnp.mean(info["losses"])})


METHOD = Method(name="msdarts", config=config, defaults=defaults, validate=validate, mix=mix, schedule=schedule,
                sweepable=("bandwidth", "epsilon", "omega_temperature"),
                report_metrics=(("mean-shift radius and size", ("ms_epsilon", "ms_shift")),))
