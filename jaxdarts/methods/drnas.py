"""DrNAS (Chen et al., ICLR 2021): architecture mixing weights drawn from Dirichlet distributions.

As the reference code (xiangning-chen/DrNAS; facts in
``../shared/METHODS_SPEC_PCDARTS_DRNAS.md`` section 2):

* **Parametrisation**: alpha holds logits ``eta`` (``1e-3 N(0, 1)``, as DARTS); each edge's
  concentration is ``beta = ELU(eta) + 1`` (:func:`concentration`).
* **Mixing weights** (``Method.weights``): every forward draws ONE sample
  ``theta ~ Dir(beta)`` per cell type (shared by the cells of that type), with the
  pathwise gradient (``jax.random.gamma``'s implicit reparameterisation, as torch's
  ``rsample``); the architecture step, the weight step and evaluation draw their own
  samples (each from its batch's key). Padded op slots get weight exactly 0 (a Dirichlet
  over the real ops). Summaries (``alpha_softmax`` in the metrics) show the Dirichlet mean
  ``beta / sum(beta)``; evaluation draws a fresh sample for every batch, as the
  reference's validation (batch ``i`` from the key ``fold_in(key(0), i)``, the same every
  epoch: evaluations are comparable).
* **Regulariser** (``drnas.reg_type``): ``'l2'`` (the code's default): Adam weight decay
  ``optim.arch_weight_decay`` = 1e-3 on eta, pulling beta to 1 (the uniform Dirichlet); the
  reference passes its ``reg_scale`` as that weight decay, so ``drnas.reg_scale`` must equal
  it (a config where they differ is refused in one line rather than one being ignored);
  ``'kl'``: ``reg_scale * sum_edges KL(Dir(beta) || Dir(1))`` added to the architecture
  loss (:func:`kl_to_uniform`), with no Adam weight decay (the code sets it to 0; the
  config must say so). The weight step uses the plain cross-entropy.
* **Partial channels**: as PC-DARTS (``model.partial_channels``; K=1 on NAS-Bench-201).
* **Derivation**: the DARTS rule on ``softmax(eta)`` (not the Dirichlet mean; per edge the
  two agree, the edge ranking may not): no ``none`` op in the DARTS space
  (``darts_no_none``), so every op competes; NAS-Bench-201: per-edge argmax with ``none``.
* Search (``configs/drnas.py``): DARTS space at the evaluation size (C=36, 20 cells), batch
  64, 50 epochs, SGD lr 0.1 cosine to 0, weight decay 3e-4, clip 5, Adam lr 6e-4
  (0.5, 0.999); first order. ``:nb201``: K=1, 100 epochs, lr 0.025 -> 0.001, Adam lr 3e-4,
  architecture steps from the first iteration.

Not reproduced: **progressive learning** (the DARTS-space default of the code: 25 epochs at
K=6 with all 7 ops, pruning to the top-4 ops per edge, widening to K=4 by copying channels,
25 more epochs, an architecture warm-up of 10 epochs per stage) needs the supernet to change
shape mid-search, which one program cannot do; this method runs one stage at the second
stage's K=4 over all 7 ops with a 10-epoch architecture warm-up. NAS-Bench-201's quirk
(the weights' gradient clipping also counting eta's training-loss gradient) is not
reproduced either.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from jax.scipy.special import digamma, gammaln

from jaxdarts import hypergrad
from jaxdarts.contract import ArchGrad, ConfigError, Method, check_choice, check_positive
from jaxdarts.methods import _simplex
from jaxdarts.task import estimator_arch_grad

REG_TYPES = ("l2", "kl")


def config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(reg_type="l2", reg_scale=1e-3))


def defaults(cfg) -> None:
    """DR:DARTS-space/train_search.py (CIFAR-10), one stage (see the module docstring)."""
    cfg.space = "darts_no_none"
    cfg.estimator = "first_order"
    cfg.model.partial_channels = 4
    cfg.epochs = 50
    cfg.arch_start_epoch = 10
    cfg.optim.lr = 0.1
    cfg.optim.lr_min = 0.0
    cfg.optim.arch_lr = 6e-4
    cfg.optim.arch_weight_decay = 1e-3


def validate(cfg) -> None:
    c = cfg.drnas
    check_choice("drnas.reg_type", c.reg_type, REG_TYPES)
    check_positive("drnas.reg_scale", c.reg_scale, allow_zero=True)
    if c.reg_type == "l2" and c.reg_scale != cfg.optim.arch_weight_decay:
        raise ConfigError(f"config.drnas.reg_scale={c.reg_scale!r} with reg_type='l2' is Adam's weight decay on eta (as "
                          f"DrNAS's reg_scale), which config.optim.arch_weight_decay={cfg.optim.arch_weight_decay!r} "
                          f"sets; accepted: reg_scale equal to optim.arch_weight_decay")
    if c.reg_type == "kl" and cfg.optim.arch_weight_decay != 0:
        raise ConfigError(f"config.drnas.reg_type='kl' replaces Adam's weight decay (DrNAS architect.py sets it to "
                          f"0); config.optim.arch_weight_decay={cfg.optim.arch_weight_decay!r}; accepted: 0")


def concentration(eta):
    """``ELU(eta) + 1`` (positive; 1 at eta = 0)."""
    return jax.nn.elu(eta) + 1.0


def sample(key, beta, mask):
    """One draw ``theta ~ Dir(beta)`` per row of ``beta`` (``(..., K)``) over the slots where
    ``mask`` is True (others 0), differentiable in ``beta`` (pathwise: normalised
    ``Gamma(beta_k, 1)`` draws with implicit-reparameterisation gradients)."""
    b = jnp.where(mask, beta, 1.0)
    g = jnp.where(mask, jax.random.gamma(key, b), 0.0)
    return g / jnp.sum(g, axis=-1, keepdims=True)


def weights(alpha, ctx):
    """A Dirichlet sample per cell type (``ctx.key``), or the Dirichlet mean (no key)."""
    space = ctx.space
    mk = _simplex.masks(space)
    out = {}
    keys = None if ctx.key is None else jax.random.split(ctx.key, len(space.cell_types))
    for i, t in enumerate(space.cell_types):
        beta = concentration(alpha[t])
        if keys is None:
            b = jnp.where(mk[t], beta, 0.0)
            out[t] = b / jnp.sum(b, axis=-1, keepdims=True)
        else:
            out[t] = sample(keys[i], beta, mk[t])
    return out


def kl_to_uniform(space, alpha):
    """``sum_edges KL(Dir(ELU(eta) + 1) || Dir(1))`` over every cell type's real op slots
    (DR:model_search.py ``_get_kl_reg``; a padded slot is not part of its edge's Dirichlet)."""
    total = 0.0
    for t in space.cell_types:
        a = concentration(alpha[t])
        m = jnp.broadcast_to(jnp.asarray(space.mask(t)), a.shape)
        a_m = jnp.where(m, a, 1.0)
        a0 = jnp.sum(jnp.where(m, a, 0.0), -1)
        k = jnp.sum(m, -1).astype(a.dtype)  # Dir(1) over k slots: lnGamma(k) - k lnGamma(1)
        kl = (gammaln(a0) - jnp.sum(jnp.where(m, gammaln(a_m), 0.0), -1) - gammaln(k)
              + jnp.sum(jnp.where(m, (a_m - 1.0) * (digamma(a_m) - digamma(a0)[..., None]), 0.0), -1))
        total = total + jnp.sum(kl)
    return total


def arch_grad(ctx, state) -> ArchGrad:
    """The configured estimator's gradient at the sampled weights (first order: one
    forward, which also gives the BatchNorm statistics), plus ``reg_scale`` times the KL
    term's gradient for ``reg_type='kl'``; the KL term is logged as ``drnas_kl`` with
    either regulariser."""
    task, c = ctx.task, ctx.config
    if task.estimator == "first_order":
        g, bs = jax.grad(lambda a: task.val_loss_and_stats(state.params, state.batch_stats, a, ctx.arch_batch),
                         has_aux=True)(state.alpha)
        g1 = hypergrad.tree_norm(g)
        out = ArchGrad(g, {"g1_norm": g1, "g2_norm": jnp.zeros_like(g1)}, {},
                       bs if task.arch_step_updates_bn(state) else None)
    else:
        out = estimator_arch_grad(ctx, state)
    if c.reg_type == "kl":
        kl, gk = jax.value_and_grad(lambda a: kl_to_uniform(task.space, a))(state.alpha)
        out = out._replace(grad=hypergrad.tree_axpy(c.reg_scale, gk, out.grad))
    else:  # logged either way: how far the concentrations are from the uniform anchor
        kl = kl_to_uniform(task.space, jax.lax.stop_gradient(state.alpha))
    return out._replace(metrics={**out.metrics, "drnas_kl": kl})


METHOD = Method(name="drnas", config=config, defaults=defaults, validate=validate, arch_grad=arch_grad,
                weights=weights, report_metrics=(("KL(Dir(beta) || Dir(1)), summed over edges", ("drnas_kl",)),))
