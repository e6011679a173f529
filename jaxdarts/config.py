"""Search configuration: defaults (DARTS ``train_search.py``) and validation.

Config files in ``configs/`` start from :func:`base` and override fields. :func:`validate`
checks every field before anything is built or compiled and raises :class:`ConfigError`
with one line naming the field and the accepted values.
"""

from __future__ import annotations

import ml_collections

from jaxdarts import data as data_lib
from jaxdarts import hypergrad
from jaxdarts import spaces as spaces_lib


class ConfigError(ValueError):
    pass


def base() -> ml_collections.ConfigDict:
    """DARTS search defaults on CIFAR-10 (first order)."""
    c = ml_collections.ConfigDict()
    c.runner = "search"  # search | rdarts (R-DARTS sweep + selection)
    c.dataset = "cifar10"
    c.space = "darts"
    c.estimator = "first_order"
    c.estimator_options = ml_collections.ConfigDict()  # e.g. eta, solver, maxiter, damping
    c.epochs = 50
    c.batch_size = 64
    c.seed = 2
    c.steps_per_epoch = 0  # 0 = the whole weight split
    c.alpha_init_scale = 1e-3
    c.arch_start_epoch = 0  # epochs of weight-only warm-up
    c.log_hypergrad_terms = False  # g1/g2 norms also for `unrolled` (an extra gradient only with inner_steps > 1)

    c.model = ml_collections.ConfigDict(dict(C=16, layers=8, auxiliary=False, aux_weight=0.4, remat=False,
                                             depthwise="auto"))  # taps on CPU, conv on GPU/TPU
    c.data = ml_collections.ConfigDict(dict(
        data_dir=ml_collections.FieldReference(None, field_type=str), train_portion=0.5,
        max_examples=0, image_size=0, augment=True, augment_val=False, crop_padding=4,
        cutout=0, cutout_prob=1.0))
    c.optim = ml_collections.ConfigDict(dict(
        lr=0.025, lr_min=0.001, momentum=0.9, weight_decay=3e-4, grad_clip=5.0,
        arch_lr=3e-4, arch_betas=(0.5, 0.999), arch_weight_decay=1e-3))
    c.regularization = ml_collections.ConfigDict(dict(drop_path=0.0, ramp=True, ramp_cutout=False))

    # Hessian eigenvalue tracking and DARTS-ES / DARTS-ADA (RobustDARTS).
    c.hessian_every = 0
    c.hessian_topk = 1
    c.hessian_method = "dense"
    c.early_stopping = ml_collections.ConfigDict(dict(
        mode="none", window=5, factor=1.3, delta=4, start_epoch=10, threshold=0.75,
        ada=False, ada_factor=10.0, ada_max=3e-2, ada_target="weight_decay"))

    # R-DARTS (bin/rdarts.py): one search per value, selection by short retraining.
    c.rdarts = ml_collections.ConfigDict(dict(
        target="drop_path", grid=(0.0, 0.2, 0.4, 0.6), mode="batched", select_epochs=10, select_C=16,
        select_layers=8))

    c.diagnose = False
    c.discretization_gap = False
    c.eval_batches = 0  # 0 = whole architecture split
    c.eval_batch_size = 0
    c.checkpoint_keep = 2
    c.snapshot_window = 12  # in-memory epoch snapshots kept for ES/ADA rollback
    c.donate = True
    c.log_every = 10
    c.progress = "auto"  # auto | bar | log
    return c


def _choice(field, value, accepted):
    if value not in accepted:
        raise ConfigError(f"config.{field}={value!r} is not accepted; accepted: {', '.join(map(str, accepted))}")


def _positive(field, value, allow_zero=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ConfigError(f"config.{field}={value!r} must be a {'non-negative' if allow_zero else 'positive'} number")


def validate(cfg) -> None:
    """Raises :class:`ConfigError` (one line) for the first bad field."""
    _choice("runner", cfg.runner, ("search", "rdarts"))
    _choice("dataset", cfg.dataset, tuple(data_lib.DATASETS))
    _choice("space", cfg.space, spaces_lib.NAMES)
    _choice("estimator", cfg.estimator, tuple(hypergrad.ESTIMATORS))
    for f in ("epochs", "batch_size", "model.C", "model.layers", "log_every"):
        v = cfg
        for p in f.split("."):
            v = v[p]
        _positive(f, v)
        if isinstance(v, float):
            raise ConfigError(f"config.{f}={v!r} must be an integer")
    for f in ("optim.lr", "optim.arch_lr"):
        _positive(f, cfg.optim[f.split(".")[1]])
    for f in ("optim.weight_decay", "optim.arch_weight_decay", "optim.momentum", "regularization.drop_path",
              "steps_per_epoch", "arch_start_epoch", "hessian_every", "eval_batches", "data.cutout"):
        a, *b = f.split(".")
        _positive(f, cfg[a][b[0]] if b else cfg[a], allow_zero=True)
    if not 0 < cfg.data.train_portion < 1:
        raise ConfigError(f"config.data.train_portion={cfg.data.train_portion!r} must be in (0, 1)")
    if not 0 <= cfg.regularization.drop_path < 1:
        raise ConfigError(f"config.regularization.drop_path={cfg.regularization.drop_path!r} must be in [0, 1)")
    _choice("model.depthwise", cfg.model.depthwise, ("auto", "taps", "conv"))
    _choice("hessian_method", cfg.hessian_method, ("dense", "lanczos"))
    _choice("early_stopping.mode", cfg.early_stopping.mode, ("none", "paper", "code"))
    _choice("early_stopping.ada_target", cfg.early_stopping.ada_target, ("weight_decay", "drop_path"))
    _choice("progress", cfg.progress, ("auto", "bar", "log"))
    _choice("rdarts.target", cfg.rdarts.target, ("drop_path", "weight_decay"))
    _choice("rdarts.mode", cfg.rdarts.mode, ("batched", "sequential"))
    if cfg.early_stopping.mode != "none" and not cfg.hessian_every:
        raise ConfigError("config.early_stopping.mode needs config.hessian_every > 0 (eigenvalues to watch)")
    space = spaces_lib.get(cfg.space)
    if space.per_cell and cfg.model.layers != space.layers:
        raise ConfigError(f"config.model.layers={cfg.model.layers} but space {space.name!r} has one alpha per "
                          f"cell for exactly {space.layers} cells")
    est = cfg.estimator_options.to_dict() if hasattr(cfg.estimator_options, "to_dict") else dict(cfg.estimator_options)
    known = {"eta", "solver", "maxiter", "damping", "tol", "neumann_scale", "inner_steps", "inner_lr", "r",
             "momentum", "weight_decay"}
    for k in est:
        if k not in known:
            raise ConfigError(f"config.estimator_options.{k} is not an estimator option; accepted: "
                              f"{', '.join(sorted(known))}")
    if "solver" in est:
        _choice("estimator_options.solver", est["solver"], ("cg", "neumann"))
