"""SDARTS (Chen & Hsieh, 2020), the baselines of MS-DARTS: the weight step at randomly
(SDARTS-RS) or adversarially (SDARTS-ADV) perturbed mixing weights.

Each step (``alpha_first``, as SmoothDARTS ``sota/cnn/train_search.py``): a first-order
DARTS step on alpha (from ``cfg.arch_start_epoch``, 0 in the code), then the perturbation
of softmax(alpha) on the per-edge simplex, then one SGD step of the weights at the
perturbed weights (training-mode BatchNorm); the logits alpha are not changed by it.

* ``sdarts.kind='rs'`` (``Random_alpha``): ``clip_simplex(w + U(-eps, eps))``
  (:func:`jaxdarts.perturb.random_smoothing`).
* ``'adv'`` (``Linf_PGD_alpha``): ``attack_steps`` (7) steps of projected sign-gradient
  ascent of the training-batch loss in eval-mode BatchNorm, step ``2 eps / steps``, from a
  random start in the box (``random_start``), projected onto the eps box and the simplex
  after every step; the clean weights are kept when the attack ends with a lower loss
  (:func:`jaxdarts.perturb.pgd_attack`).

The radius ramps ``0.03 -> eps`` (``eps_schedule='sdarts'``: ``0.03 + (eps - 0.03) e/E``,
the code's; eps = 0.3), traced (``sdarts_epsilon`` in the metrics; ``Sweep('sdarts.epsilon',
...)`` is one program). Per-step metrics: ``perturb_l2`` / ``perturb_linf`` (distance of the
perturbed weights from softmax(alpha)); ADV also ``adv_reverted`` (fraction of steps that
kept the clean weights) and ``adv_loss_gain`` (attacked minus clean loss). ``loss_bn``
``'eval'`` (code) | ``'train'``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jaxdarts import perturb
from jaxdarts.contract import Method, Mix, check_choice, check_positive
from jaxdarts.methods import _simplex

KINDS = ("rs", "adv")


def config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(kind="rs", epsilon=0.3, eps_schedule="sdarts", attack_steps=7,
                                          random_start=True, loss_bn="eval"))


def defaults(cfg) -> None:
    cfg.estimator = "first_order"


def validate(cfg) -> None:
    c = cfg.sdarts
    check_choice("sdarts.kind", c.kind, KINDS)
    check_choice("sdarts.eps_schedule", c.eps_schedule, perturb.EPS_SCHEDULES)
    check_choice("sdarts.loss_bn", c.loss_bn, _simplex.LOSS_BNS)
    check_choice("sdarts.random_start", c.random_start, (True, False))
    check_positive("sdarts.epsilon", c.epsilon)
    check_positive("sdarts.attack_steps", c.attack_steps, integer=True)


def schedule(c, epoch: int, epochs: int) -> dict:
    return {"sdarts_epsilon": perturb.epsilon_schedule(c.eps_schedule, c.epsilon, epoch, epochs)}


def mix(ctx, state) -> Mix:
    c, task = ctx.config, ctx.task
    center = _simplex.clean_weights(task, state)
    mk = _simplex.masks(task.space)
    eps = ctx.sched["sdarts_epsilon"]
    noise = perturb.uniform_noise(ctx.key, center, (), mk)
    metrics = {}
    if c.kind == "rs":
        w = perturb.random_smoothing(center, noise, epsilon=eps, mask=mk)
    else:
        loss = _simplex.loss_at_weights(task, state, ctx.weight_batch, c.loss_bn)
        w, info = perturb.pgd_attack(center, loss, noise, epsilon=eps, steps=c.attack_steps,
                                     random_start=c.random_start, mask=mk)
        metrics = {"adv_reverted": info["reverted"].astype(jnp.float32),
                   "adv_loss_gain": info["loss_adv"] - info["loss_clean"]}
    w = jax.lax.stop_gradient(w)
    l2, linf = _simplex.distance(w, center)
    return Mix(w, {"perturb_l2": l2, "perturb_linf": linf, **metrics})


METHOD = Method(name="sdarts", config=config, defaults=defaults, validate=validate, mix=mix, schedule=schedule,
                sweepable=("epsilon",),
                report_metrics=(("perturbation radius and size", ("sdarts_epsilon", "perturb_l2", "perturb_linf")),))
