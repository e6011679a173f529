"""Search configuration: shared defaults (DARTS ``train_search.py``) and validation.

Config files in ``configs/`` start from :func:`base` (``base("robustdarts")`` adds that
method's own section ``cfg.robustdarts``) and override fields. The shared sections are
the engine's: data, model, optimisers, regularisation, evaluation, analyses (Hessian
eigenvalues, estimator diagnostics), checkpoints and logging. :func:`validate` checks
every shared field, then hands the config to the method's own ``validate``, before
anything is built or compiled, and raises :class:`ConfigError` with one line naming the
field and the accepted values.
"""

from __future__ import annotations

import importlib.util
import inspect
import os

import ml_collections

from jaxdarts import data as data_lib
from jaxdarts import hypergrad
from jaxdarts import kernels
from jaxdarts import registry as methods_lib  # finds methods by name; imports none
from jaxdarts import spaces as spaces_lib
from jaxdarts import supernet as supernet_lib
from jaxdarts.contract import HESSIAN_BATCHES, UPDATE_ORDERS, ConfigError, check_choice, check_positive

__all__ = ["ConfigError", "check_choice", "check_positive", "base", "validate", "load_file", "load_module",
           "resolve_path", "variants"]

LEGACY_VALUES = {
    "model.arch_step_updates_bn": False,  # 92b7362 (2026-12-02): before it, only the weight step updated BN statistics
    "model.partial_channels": 1,  # ad7dc46 (2026-12-02): before it, every op saw all channels
    "balenas.tf.network": "search",  # 25c1598 (2026-12-02): before it, BaLeNAS-TF scored the search supernet's cells
    "model.edge_loop": "auto",  # 4bf7313 (2026-12-02): 'auto' resumes a checkpoint's edge loop ('vmap' before it)
    "data.crop_fill": "normalized",  # 2026-12-04: before it, the crop padded the normalised image
}
"""Fields added after runs may have started, with the value that reproduces the behaviour
before the field existed: resuming a workdir whose config.json lacks one is accepted when
the config holds that value (:meth:`jaxdarts.runner.Runner`), and otherwise refused naming it."""

SHIPPED_CONFIGS = os.path.dirname(importlib.util.find_spec("jaxdarts.configs").origin)
"""Where the config files shipped with the package are (``configs/`` of a checkout)."""


def resolve_path(path: str) -> str:
    """``path`` if it exists; otherwise, for ``[.../]configs/<name>.py``, the config file of
    that name shipped with the package (``jaxdarts.configs``), so ``--config
    configs/balenas.py`` works from any directory. FileNotFoundError naming the shipped
    ones if neither exists."""
    if os.path.exists(path):
        return path
    shipped = os.path.join(SHIPPED_CONFIGS, os.path.basename(path))
    if os.path.basename(os.path.dirname(os.path.normpath(path))) in ("configs", "") and os.path.exists(shipped):
        return shipped
    names = sorted(f for f in os.listdir(SHIPPED_CONFIGS) if f.endswith(".py") and not f.startswith(("_", "common")))
    raise FileNotFoundError(f"config file {path!r} not found; shipped with jaxdarts: "
                            f"{', '.join('configs/' + n for n in names)}")


def variants(arg: str, accepted, name: str) -> list[str]:
    """The comma-separated variants of ``--config <name>:<arg>`` in order; ValueError
    (one line) naming an unknown one and the accepted ones. Shared by the config files."""
    out = [v for v in (arg or "").split(",") if v]
    for v in out:
        if v not in accepted:
            raise ValueError(f"unknown variant {v!r} of {name}; accepted: {', '.join(accepted)}")
    return out


def load_module(path: str):
    """The config file at ``path`` (``configs/x.py``, :func:`resolve_path`) as a module: its
    ``get_config`` and its docstring (command, cost, expected result)."""
    path = resolve_path(path)
    name = "jaxdarts_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_file(path: str, variant: str = "") -> ml_collections.ConfigDict:
    """``get_config(variant)`` of the config file at ``path``: what ``--config path:variant``
    gives ``bin/search.py`` or ``bin/train.py``, for notebooks and benchmarks."""
    return load_module(path).get_config(variant)


def base(method: str = "darts") -> ml_collections.ConfigDict:
    """DARTS search defaults on CIFAR-10 (first order), for ``method`` (with its section)."""
    c = ml_collections.ConfigDict()
    c.method = method  # jaxdarts.methods.names()
    c.dataset = "cifar10"
    c.space = "darts"
    c.estimator = "first_order"
    c.estimator_options = ml_collections.ConfigDict()  # e.g. eta, solver, maxiter, damping
    c.epochs = 50
    c.batch_size = 64
    c.seed = 2
    c.num_seeds = 1  # > 1: seeds seed, seed+1, ... searched together as one vmapped program
    c.steps_per_epoch = 0  # 0 = the whole weight split
    c.alpha_init_scale = 1e-3
    c.arch_start_epoch = 0  # epochs of weight-only warm-up
    c.update_order = "method"  # method (its default) | alpha_first | weights_first (NB201's DARTS) | simultaneous
    c.log_hypergrad_terms = False  # g1/g2 norms also for `unrolled` (an extra gradient only with inner_steps > 1)

    c.model = ml_collections.ConfigDict(dict(C=16, layers=8, auxiliary=False, aux_weight=0.4, remat=False,
                                             depthwise="auto",  # taps on CPU, conv on GPU/TPU
                                             # scan: one mixed-op body per cell, looped over the edges (the
                                             # smaller program); vmap: edges batched in dependency waves;
                                             # auto: scan, or a resumed checkpoint's (supernet.EDGE_LOOPS)
                                             edge_loop="auto",
                                             track_running_stats=True,  # False: cells use batch statistics
                                             # the architecture step's training-mode forward updates the
                                             # BatchNorm running statistics, as the references' (False: only
                                             # the weight step does)
                                             arch_step_updates_bn=True,
                                             # K > 1: partial channels (PC-DARTS): each edge's ops see the
                                             # first C/K channels, the rest bypass them (jaxdarts.supernet)
                                             partial_channels=1))
    c.data = ml_collections.ConfigDict(dict(
        data_dir=ml_collections.FieldReference(None, field_type=str), train_portion=0.5,
        max_examples=0, image_size=0, augment=True, crop_padding=4, cutout=0, cutout_prob=1.0,
        crop_fill="raw",  # the crop pads the raw image with 0, as torchvision (jaxdarts.data.CROP_FILLS)
        flip="auto",  # auto (the dataset's default: no flips for SVHN) | on | off
        # Architecture batches through the training transform (crop + flip, and cutout when on),
        # as every reference does: their valid queue samples the training set with the training
        # transform (DARTS, BaLeNAS/iDARTS, MS-DARTS, SmoothDARTS, RobustDARTS train_search.py;
        # AutoDL's NAS-Bench-201 search data). False: clean architecture batches.
        augment_val=True))
    c.optim = ml_collections.ConfigDict(dict(
        lr=0.025, lr_min=0.001, momentum=0.9, weight_decay=3e-4, grad_clip=5.0,
        # True: NAS-Bench-201's DARTS (AutoDL-Projects). Estimators with a virtual step then take
        # it as heavy-ball SGD with the optimiser's momentum buffer, as AutoDL's DARTS-V2
        # (_compute_unrolled_model: theta - lr (mu buf + g + wd theta)), not a Nesterov step.
        nesterov=False,
        lr_schedule="epoch_cosine",  # epoch_cosine (DARTS) | step_cosine (per iteration, NAS-Bench-201)
        arch_lr=3e-4, arch_betas=(0.5, 0.999), arch_weight_decay=1e-3))
    c.regularization = ml_collections.ConfigDict(dict(
        drop_path=0.0, ramp=True, ramp_cutout=False,
        drop_path_scope="edge",  # edge: each mixed-op output (RobustDARTS reference) | op: each op output
        drop_path_arch=True,  # drop-path in the architecture step's losses too (reference: model in train mode)
        cutout_needs_drop_path=False))  # True: cutout off in runs whose max drop-path is 0 (RobustDARTS code)

    # analyses any method can log (jaxdarts.hooks)
    c.hessian_every = 0  # dominant eigenvalue of d2 L_val/d alpha2 after epochs e % N == 0 and the last
    c.hessian_topk = 1
    c.hessian_method = "dense"
    c.hessian_batch = "search"  # search: the last step's architecture batch as the step saw it (reference) | clean
    c.diagnose = False
    c.discretization_gap = False
    c.eval_batches = 0  # 0 = whole architecture split
    c.eval_batch_size = 0
    c.checkpoint_keep = 2
    c.snapshot_window = 12  # in-memory epoch snapshots kept for ES/ADA rollback
    c.donate = True
    # Data parallelism (jaxdarts.parallel): the search batches split over this many devices
    # (0 = all devices of all hosts); 1 = one device, the program as before.
    c.mesh = ml_collections.ConfigDict({"num_devices": 1})
    # TensorBoard event files in <workdir>/tensorboard (jaxdarts.tensorboard, no TensorFlow):
    # every epoch's scalars; the derived cells as images every N epochs and at the end
    # (0: only at the end; images need matplotlib).
    c.tensorboard = True
    c.tensorboard_images_every = 10
    c.log_every = 10
    c.progress = "auto"  # auto | bar | log
    m = methods_lib.get(method)
    if m.config is not None:
        c[method] = m.config()
    if m.defaults is not None:
        m.defaults(c)
    return c


def _get(cfg, field):
    v = cfg
    for p in field.split("."):
        v = v[p]
    return v


def estimator_option_names() -> tuple[str, ...]:
    """Keyword options the estimators of :mod:`jaxdarts.hypergrad` accept (read from their signatures)."""
    skip = {"train_loss", "val_loss", "params", "alpha", "train_batch", "val_batch", "has_aux", "recompute",
            "momentum_buffer", "_"}
    names = set()
    for fn in hypergrad.ESTIMATORS.values():
        for p in inspect.signature(fn).parameters.values():
            if p.kind == p.KEYWORD_ONLY and p.name not in skip:
                names.add(p.name)
    return tuple(sorted(names))


def validate(cfg) -> None:
    """Raises :class:`ConfigError` (one line) for the first bad field, shared or the method's.
    Called once per config at the entry points: :meth:`jaxdarts.search.SearchTask.from_config`
    and ``from_arrays`` (every search program builds its tasks with them; the CLI's errors come
    from there), :func:`jaxdarts.compare.method_config`."""
    check_choice("method", cfg.get("method"), methods_lib.names())
    method = methods_lib.get(cfg.method)
    if method.config is not None and cfg.method not in cfg:
        raise ConfigError(f"config.method={cfg.method!r} needs its section config.{cfg.method}; build the config "
                          f"with jaxdarts.config.base({cfg.method!r}) (e.g. configs/ files do)")
    check_choice("dataset", cfg.dataset, tuple(data_lib.DATASETS))
    check_choice("space", cfg.space, spaces_lib.NAMES)
    check_choice("estimator", cfg.estimator, tuple(hypergrad.ESTIMATORS))
    for f in ("epochs", "batch_size", "model.C", "model.layers", "model.partial_channels", "log_every", "num_seeds"):
        check_positive(f, _get(cfg, f), integer=True)
    for f in ("optim.lr", "optim.arch_lr"):
        check_positive(f, _get(cfg, f))
    for f in ("optim.weight_decay", "optim.arch_weight_decay", "optim.momentum", "regularization.drop_path",
              "steps_per_epoch", "arch_start_epoch", "hessian_every", "eval_batches", "data.cutout"):
        check_positive(f, _get(cfg, f), allow_zero=True)
    if not 0 < cfg.data.train_portion <= 1:
        raise ConfigError(f"config.data.train_portion={cfg.data.train_portion!r} must be in (0, 1]")
    if cfg.data.train_portion == 1 and cfg.estimator != "one_level":
        raise ConfigError(f"config.data.train_portion=1 leaves no architecture split for config.estimator="
                          f"{cfg.estimator!r}; accepted: a portion in (0, 1), or estimator=one_level (StacNAS: "
                          "weights and alpha on all training data)")
    if not 0 <= cfg.regularization.drop_path < 1:
        raise ConfigError(f"config.regularization.drop_path={cfg.regularization.drop_path!r} must be in [0, 1)")
    check_choice("update_order", cfg.update_order, ("method",) + UPDATE_ORDERS)
    check_choice("optim.lr_schedule", cfg.optim.lr_schedule, ("epoch_cosine", "step_cosine"))
    check_choice("model.depthwise", cfg.model.depthwise, kernels.LOWERINGS + ("auto",))
    check_choice("model.edge_loop", cfg.model.get("edge_loop", "auto"), supernet_lib.EDGE_LOOPS + ("auto",))
    check_choice("regularization.drop_path_scope", cfg.regularization.drop_path_scope,
                 supernet_lib.DROP_PATH_SCOPES)
    check_choice("data.flip", cfg.data.flip, ("auto", "on", "off"))
    check_choice("data.crop_fill", cfg.data.get("crop_fill", "raw"), data_lib.CROP_FILLS)
    check_choice("hessian_method", cfg.hessian_method, ("dense", "lanczos"))
    check_choice("hessian_batch", cfg.hessian_batch, HESSIAN_BATCHES)
    check_choice("progress", cfg.progress, ("auto", "bar", "log"))
    if cfg.num_seeds > 1 and (cfg.hessian_every or cfg.diagnose):
        raise ConfigError(f"config.num_seeds={cfg.num_seeds} runs a vmapped seed sweep without per-epoch hooks; "
                          "set hessian_every=0 and diagnose=False, or num_seeds=1")
    space = spaces_lib.get(cfg.space)
    if space.per_cell and cfg.model.layers != space.layers:
        raise ConfigError(f"config.model.layers={cfg.model.layers} but space {space.name!r} has one alpha per "
                          f"cell for exactly {space.layers} cells")
    est = cfg.estimator_options.to_dict() if hasattr(cfg.estimator_options, "to_dict") else dict(cfg.estimator_options)
    known = estimator_option_names()
    for k in est:
        if k not in known:
            raise ConfigError(f"config.estimator_options.{k} is not an estimator option; accepted: {', '.join(known)}")
    if "solver" in est:
        check_choice("estimator_options.solver", est["solver"], ("cg", "neumann"))
    if method.validate is not None:
        method.validate(cfg)
