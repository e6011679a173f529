"""The search engine: state, jitted step, epoch loop, hooks, checkpoints, metrics, programs.

The engine knows no method. A method (:class:`Method`, one module per paper under
:mod:`jaxdarts.methods`, found by the name in ``cfg.method``) is data the engine consumes:
its architecture gradient, architecture optimiser, the mixing weights the weight step sees,
the update order, the discretisation, per-epoch hooks and its program.

Pieces (each usable on its own, e.g. from a notebook)::

    task = SearchTask.from_config(cfg)           # or SearchTask.from_arrays(cfg, train, val, info)
    state = task.init_state()                    # SearchState pytree
    step = jax.jit(task.search_step)             # one architecture + one weight update
    state, m = step(state, train_batch, val_batch, task.schedule_values(epoch))

:class:`Runner` drives epochs in a workdir: deterministic batches, one jitted step,
evaluation, genotype derivation, ``metrics.jsonl`` (one JSON object per epoch), Orbax
checkpoints every epoch, resume, and :class:`Hook` objects that see each epoch's state,
may add metrics and return typed events (:class:`Stop`, :class:`Rollback`,
:class:`SetHyperparam`). With a :class:`Sweep` the same runner advances several searches
that differ in one value (a regularisation strength, the seed) as one ``vmap``-ed program.

Programs: :func:`run_single` (one search, or a seed sweep when ``cfg.num_seeds > 1``) and
:func:`run_sweep`; a method may bring its own (R-DARTS: a sweep then selection by
retraining). :func:`run` dispatches on ``cfg.method``.

Conventions: the losses are ``loss(params, alpha, batch)`` closures over the BN running
statistics; batch-norm statistics in training mode come from the batch (running averages
are updated by the weight step and, as in the references, by the architecture step's forward:
``model.arch_step_updates_bn``). A preprocessed batch carries its own randomness
(``rng``: augmentation-independent keys for noise ops and drop-path) and its drop-path
probability (``drop_prob``), so every loss evaluated on it (the weight step's, an
estimator's virtual step and validation loss, a Hessian) sees the same regularisation; the
S4 ``noise`` op's key also depends on the mixing weights (:meth:`SearchTask.apply`).
Weight decay acts on the weight step. Where search regularisation reaches the
architecture step is configured (RobustDARTS reference defaults):
``regularization.drop_path_arch`` (drop-path in the architecture step's losses too) and
``data.augment_val`` (architecture batches get the training transform, cutout included,
and the architecture step's training batch is the weight step's).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Callable, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.extend.core import jaxpr_as_fun

from jaxdarts import data as data_lib
from jaxdarts import genotype as genotype_lib
from jaxdarts import hypergrad
from jaxdarts import io as io_lib
from jaxdarts import kernels
from jaxdarts import optim
from jaxdarts import programs
from jaxdarts import spaces as spaces_lib
from jaxdarts import supernet as supernet_lib
from jaxdarts.losses import cross_entropy, with_auxiliary

__all__ = ["SearchState", "SearchTask", "Method", "Runner", "Hook", "Stop", "Rollback", "SetHyperparam", "Sweep",
           "run", "run_single", "run_sweep", "cross_entropy", "NonFiniteLossError", "HookConflictError"]


class NonFiniteLossError(FloatingPointError):
    pass


class HookConflictError(RuntimeError):
    """Two hooks asked for incompatible things in the same epoch."""


@flax.struct.dataclass
class SearchState:
    params: Any
    batch_stats: Any
    alpha: Any
    w_opt: Any
    a_opt: Any
    step: jax.Array
    rng: jax.Array  # raw uint32 key data (checkpointable)


def fold_key(raw, *data):
    """The PRNG key ``raw`` (raw key data, as in :attr:`SearchState.rng`) folded with ``data``."""
    k = jax.random.wrap_key_data(raw)
    for d in data:
        k = jax.random.fold_in(k, d)
    return k


# ------------------------------------------------------------------ methods
UPDATE_ORDERS = ("alpha_first", "weights_first", "simultaneous")


@dataclasses.dataclass(frozen=True)
class Method:
    """What a method supplies to the engine (every field has the DARTS default).

    Attributes:
      name: the ``cfg.method`` value (and the module ``jaxdarts.methods.<name>``).
      config: ``() -> ConfigDict`` of the method's own section ``cfg.<name>``, or None.
      defaults: ``(cfg) -> None`` setting the method's defaults of shared fields (e.g. its
        estimator) when :func:`jaxdarts.config.base` builds a config for it.
      validate: ``(cfg) -> None``; raises :class:`jaxdarts.config.ConfigError` (one line)
        for a bad field of the method's section or a combination it refuses.
      arch_grad: ``(task, state, train_batch, val_batch, key) -> (grad, metrics, tx_args)``,
        the architecture gradient (batches preprocessed; ``tx_args`` are extra keyword
        arguments of the architecture optimiser's ``update``, e.g. a key or squared
        gradients for VAdam). None: :func:`estimator_arch_grad` (``cfg.estimator``).
        It may return a fourth element, the BatchNorm running statistics after its own
        training-mode forwards on the architecture batch (``model.arch_step_updates_bn``;
        otherwise the engine adds a forward for them).
      arch_tx: ``(task) -> optax transformation`` over alpha (the task gives the config
        and the data sizes, e.g. VAdam's dataset size); None: PyTorch Adam from
        ``cfg.optim`` (:func:`jaxdarts.optim.adam`).
      mix: ``(task, state, train_batch, val_batch, key, sched) -> (weights, metrics)``: the
        mixing weights (``{cell_type: (E, K)}``, used with ``normalized=True``) that the
        weight step sees instead of ``softmax(alpha)`` (perturbations of MS-DARTS/SDARTS),
        computed from the state after the architecture step of ``alpha_first`` (the
        preprocessed batches of the step, its key, the epoch's ``sched`` with the method's
        schedule values), or None. Traced inside the step; alpha is not changed by it.
      schedule: ``(cfg, epoch, overrides) -> {name: float}``: the method's per-epoch scalars
        (a perturbation radius, a bandwidth), added to the step's ``sched`` as traced values
        (a ramp or a sweep over them never recompiles) and logged each epoch; ``overrides``
        (``{field: value}``) are a sweep's values of fields in ``sweepable``.
      sweepable: fields of the method's section a :class:`Sweep` may vary
        (``Sweep('<method>.<field>', values)``); each must reach the step only through
        ``schedule``.
      update_order: ``'alpha_first'`` (DARTS: architecture step, then the weight step at the
        new alpha), ``'weights_first'`` (NAS-Bench-201's DARTS) or ``'simultaneous'`` (both
        gradients at the same ``(w, alpha)``, then both updates: one-level StacNAS).
      derive: ``(space, alpha) -> Genotype``; None: :func:`jaxdarts.genotype.derive`.
      hooks: ``(cfg) -> list[Hook]`` appended after the engine's (eigenvalue tracking).
      program: ``(cfg, workdir, *, log, max_epochs, hooks) -> summary`` (one search,
        stages, a sweep); None: :func:`run_single`.
    """

    name: str
    config: Callable[[], Any] | None = None
    defaults: Callable[[Any], None] | None = None
    validate: Callable[[Any], None] | None = None
    arch_grad: Callable | None = None
    arch_tx: Callable[["SearchTask"], optax.GradientTransformation] | None = None
    mix: Callable | None = None
    schedule: Callable | None = None
    sweepable: tuple[str, ...] = ()
    update_order: str = "alpha_first"
    derive: Callable | None = None
    hooks: Callable[[Any], list] | None = None
    program: Callable | None = None

    def __post_init__(self):
        if self.update_order not in UPDATE_ORDERS:
            raise ValueError(f"method {self.name!r}: update_order={self.update_order!r} is not accepted; "
                             f"accepted: {', '.join(UPDATE_ORDERS)}")


def estimator_arch_grad(task: "SearchTask", state: SearchState, train_batch, val_batch, key):
    """The hypergradient estimator named in ``cfg.estimator`` with the options of
    :meth:`SearchTask.estimator_options`; metrics ``g1_norm``/``g2_norm`` (and the solver
    residual of ``implicit``)."""
    cfg = task.cfg
    train_loss, val_loss = task.losses(state.batch_stats)
    est = hypergrad.get(cfg.estimator)
    want_aux = cfg.estimator != "unrolled" or cfg.log_hypergrad_terms
    out = est(train_loss, val_loss, state.params, state.alpha, train_batch, val_batch, has_aux=want_aux,
              **task.estimator_options(state))
    g, aux = out if want_aux else (out, {})
    metrics = {}
    if aux:
        metrics = {"g1_norm": hypergrad.tree_norm(aux["g1"]), "g2_norm": hypergrad.tree_norm(aux["g2"])}
        if "residual" in aux:
            metrics["solver_residual"] = aux["residual"]
    return g, metrics, {}


def fresh_noise_key(rng_data, weights):
    """The key data ``rng_data`` (``jax.random.key_data``) folded with a 32-bit hash of the
    values of ``weights`` (a pytree; no gradient flows through the hash): different mixing
    weights give independent keys, equal ones the same key. Works under ``vmap``."""
    h = jnp.uint32(0)
    for i, leaf in enumerate(jax.tree.leaves(weights)):
        bits = jax.lax.bitcast_convert_type(jax.lax.stop_gradient(jnp.asarray(leaf, jnp.float32)), jnp.uint32)
        mult = jnp.arange(1, bits.size + 1, dtype=jnp.uint32).reshape(bits.shape) * jnp.uint32(2654435761)
        h = h * jnp.uint32(1000003) + jnp.sum(bits * mult, dtype=jnp.uint32) + jnp.uint32(i)
    return jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(rng_data), h))


def _zeros_like_struct(tree):
    return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), tree)


# --------------------------------------------------------------------- task
HOST_ONLY_FIELDS = ("seed", "num_seeds", "log_every", "progress", "checkpoint_keep", "snapshot_window",
                    "tensorboard", "tensorboard_images_every", "eval_batches", "eval_batch_size", "data.data_dir",
                    "discretization_gap", "hessian_every", "diagnose", "arch_start_epoch", "mesh")
"""Config fields no traced program reads (batch order, logging, cadence, files; the warm-up
and the mesh reach the step as traced values and memo keys): tasks that differ only in them
share programs. Everything else in the config is part of the signature."""


def program_signature(task: "SearchTask") -> tuple:
    """The static signature of a task's programs: the config without
    :data:`HOST_ONLY_FIELDS`, the method (the registry's object, compared by identity of its
    functions), the lowering, the data's shapes and sizes (they set steps per epoch, the
    learning-rate schedule and VAdam's dataset size) and its normalisation and flips."""
    d = json.loads(task.cfg.to_json_best_effort())
    for f in HOST_ONLY_FIELDS:
        *path, last = f.split(".")
        node = d
        for p in path:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    info = dataclasses.astuple(task.ds_info) if dataclasses.is_dataclass(task.ds_info) else repr(task.ds_info)
    shapes = tuple((s.images.shape, s.images.dtype.str, len(s.labels)) for s in (task.train_stream, task.val_stream))
    return (json.dumps(d, sort_keys=True), task.method, task.lowering, repr(info), shapes,
            tuple(np.shape(a) for a in task.eval_data), task.space.name, task.model)


@dataclasses.dataclass(frozen=True)
class SearchTask:
    """Everything static about a search: method, model, optimisers, data streams.

    Build it with :meth:`from_config` (loads the dataset named in the config) or
    :meth:`from_arrays` (in-memory arrays: notebooks, benchmarks, other JAX code). Frozen:
    a changed piece is a new task (:meth:`with_lowering`)."""

    cfg: Any
    method: Method
    space: spaces_lib.SearchSpace
    model: supernet_lib.Supernet
    train_stream: data_lib.BatchStream
    val_stream: data_lib.BatchStream
    eval_data: tuple[np.ndarray, np.ndarray]
    ds_info: data_lib.DatasetInfo
    lowering: str

    # ------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg, method: Method | None = None, lowering: str | None = None) -> "SearchTask":
        """Validates ``cfg``, loads ``cfg.dataset`` and builds the task."""
        from jaxdarts import config as config_lib

        config_lib.validate(cfg)
        d = cfg.data
        train, val = data_lib.load_search_data(cfg.dataset, d.data_dir, d.max_examples, d.image_size,
                                               d.train_portion)
        return cls.from_arrays(cfg, train, val, data_lib.info(cfg.dataset), method=method, lowering=lowering)

    @classmethod
    def from_arrays(cls, cfg, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                    info: data_lib.DatasetInfo, *, method: Method | None = None,
                    lowering: str | None = None) -> "SearchTask":
        """A task on in-memory data: ``train``/``val`` are ``(uint8 images NHWC, int labels)``
        for the weights and the architecture; ``info`` gives classes, normalisation and
        whether flips preserve labels. ``method`` defaults to ``cfg.method`` from the
        registry; ``lowering`` to ``cfg.model.depthwise`` resolved for this backend."""
        if method is None:
            from jaxdarts import methods as methods_lib  # the registry (finds methods by name)

            method = methods_lib.get(cfg.method)
        lowering = kernels.resolve_lowering(lowering or cfg.model.depthwise)
        space = spaces_lib.get(cfg.space)
        model = supernet_lib.Supernet(space, info.num_classes, C=cfg.model.C, layers=cfg.model.layers,
                                      auxiliary=cfg.model.auxiliary, remat=cfg.model.remat, lowering=lowering,
                                      drop_path_scope=cfg.regularization.drop_path_scope,
                                      track_running_stats=cfg.model.track_running_stats)
        return cls(cfg, method, space, model,
                   data_lib.BatchStream(*train, cfg.batch_size, cfg.seed),
                   data_lib.BatchStream(*val, cfg.batch_size, cfg.seed + 7919),
                   tuple(val), info, lowering)

    def with_lowering(self, lowering: str) -> "SearchTask":
        lowering = kernels.resolve_lowering(lowering)
        return dataclasses.replace(self, model=self.model.clone(lowering=lowering), lowering=lowering)

    @property
    def steps_per_epoch(self) -> int:
        n = self.train_stream.steps_per_epoch
        return min(n, self.cfg.steps_per_epoch) if self.cfg.steps_per_epoch else n

    def lr_schedule(self):
        o = self.cfg.optim
        sched = optim.cosine_step_schedule if o.lr_schedule == "step_cosine" else optim.cosine_epoch_schedule
        return sched(o.lr, o.lr_min, self.cfg.epochs, self.steps_per_epoch)

    def weight_tx(self):
        o = self.cfg.optim
        return optim.sgd_injectable(self.lr_schedule(), o.momentum, o.weight_decay, o.grad_clip or None,
                                    o.nesterov)

    def arch_tx(self):
        if self.method.arch_tx is not None:
            return self.method.arch_tx(self)
        o = self.cfg.optim
        return optim.adam(o.arch_lr, o.arch_betas[0], o.arch_betas[1], o.arch_weight_decay)

    @property
    def update_order(self) -> str:
        """``cfg.update_order``, or the method's when that is ``'method'``."""
        o = self.cfg.update_order
        return self.method.update_order if o == "method" else o

    def derive(self, alpha) -> genotype_lib.Genotype:
        return (self.method.derive or genotype_lib.derive)(self.space, alpha)

    @property
    def signature(self) -> tuple:
        """What the task's traced programs read (:func:`program_signature`); tasks with equal
        signatures share their jitted programs (:meth:`memo`)."""
        if "_signature" not in self.__dict__:  # not a field: the task stays frozen
            self.__dict__["_signature"] = program_signature(self)
        return self.__dict__["_signature"]

    def memo(self, key, build: Callable[[], Any]):
        """``build()`` once per process for this task's :attr:`signature` and ``key``: jitted
        functions shared by every runner and hook of this task and of every task with the
        same signature (a resumed run, a sweep member, a test), so each distinct program is
        traced and compiled once per process (:mod:`jaxdarts.programs`). ``build`` must read
        from the task only what the signature covers (the config, shapes, method, lowering)."""
        return programs.shared((self.signature, key), build)

    def init_state(self, seed: int | None = None) -> SearchState:
        seed = self.cfg.seed if seed is None else seed
        key = jax.random.key(seed)
        k_alpha, k_params, k_rng = jax.random.split(key, 3)
        alpha = supernet_lib.init_alpha(self.space, k_alpha, self.cfg.alpha_init_scale)
        x = jnp.zeros((2,) + self.train_stream.images.shape[1:], jnp.float32)
        # train=True so that training-only modules (the auxiliary head) get parameters. The
        # init runs once per state: compiled without XLA's optimisation passes (the tiny test
        # supernet's init compiled in ~20 s otherwise, more than its search step; same values).
        init = self.memo("init", lambda: programs.compile_once(
            lambda k, x, alpha: self.model.init({"params": k, "noise": k, "dropout": k}, x, alpha, train=True),
            kernels.FAST_COMPILE_OPTIONS))
        variables = init(k_params, x, alpha)
        params = variables["params"]
        return SearchState(params=params, batch_stats=variables.get("batch_stats", {}), alpha=alpha,
                           w_opt=self.weight_tx().init(params), a_opt=self.arch_tx().init(alpha),
                           step=jnp.zeros((), jnp.int32), rng=jax.random.key_data(k_rng))

    # ------------------------------------------------------------ pure pieces
    @property
    def flip(self) -> bool:
        """Random horizontal flips in the training transform: ``data.flip`` ``'on'``,
        ``'off'`` or ``'auto'`` (the dataset's default: off for SVHN, whose digits flipping
        changes; the RobustDARTS code flips SVHN too, ``configs/rdarts.py`` follows it)."""
        f = self.cfg.data.flip
        return self.ds_info.flip if f == "auto" else f == "on"

    def preprocess(self, key, batch, train: bool, cutout_prob=1.0, drop_prob=0.0):
        """Normalised float batch; with ``train``, the training transform (crop, flip,
        cutout with probability ``cutout_prob``). The result carries the keys of its noise
        and drop-path masks (``rng``) and its drop-path probability (``drop_prob``)."""
        x = data_lib.normalize(batch["image"], self.ds_info.mean, self.ds_info.std)
        d = self.cfg.data
        if train and d.augment:
            x = data_lib.augment(key, x, pad=d.crop_padding, flip=self.flip, cutout=d.cutout,
                                 cutout_prob=cutout_prob)
        return {"image": x, "label": batch["label"], "rng": jax.random.key_data(jax.random.fold_in(key, 1)),
                "drop_prob": jnp.asarray(drop_prob, jnp.float32)}

    def apply(self, params, batch_stats, alpha, batch, *, train: bool, normalized=False):
        """Supernet forward; returns ``(logits, aux_logits_or_None, new_batch_stats)``.
        In training, drop-path at the batch's ``drop_prob`` (0 for a batch without one).

        In a space with the ``noise`` op (RobustDARTS S4) the noise key is the batch's folded
        with a hash of the mixing weights (:func:`fresh_noise_key`): every forward at other
        weights draws other noise (each MS-DARTS sample, each PGD step, the weight step), as
        the reference's ``NoiseOp`` draws fresh noise at every forward; forwards at the same
        weights on the same batch (a loss and its derivatives, a finite difference in w) share
        it. Other spaces' programs are unchanged."""
        dp = batch.get("drop_prob", 0.0)
        static_dp = float(dp) if isinstance(dp, (int, float)) else None  # a Python 0 skips drop-path
        fwd = self.forward(train, normalized, static_dp)
        rng = batch.get("rng")
        if rng is not None and self.has_noise_op:
            rng = fresh_noise_key(rng, alpha)
        return fwd(params, batch_stats, alpha, batch["image"], rng, None if static_dp is not None else dp)

    @property
    def has_noise_op(self) -> bool:
        return any(op == "noise" for t in self.space.cell_types for ops in self.space.ops[t] for op in ops)

    def forward(self, train: bool, normalized: bool = False, static_drop_prob: float | None = None):
        """The supernet forward ``(params, batch_stats, alpha, image, rng, drop_prob) ->
        (logits, aux_or_None, new_batch_stats)``, traced once per input signature and shared
        by every caller of the task (and by every task of the same program signature,
        :meth:`memo`): the architecture step, the weight step, an estimator's virtual step,
        Hessian-vector products, evaluation and ``vmap``-ed samples replay one jaxpr instead
        of running the Flax module's Python again (:func:`jaxdarts.programs.trace_once`;
        the program is the same as tracing the module at each call)."""
        def fwd(params, batch_stats, alpha, image, rng, drop_prob):
            rngs = {}
            if rng is not None:
                k = jax.random.wrap_key_data(rng)
                rngs = {"noise": jax.random.fold_in(k, 0), "dropout": jax.random.fold_in(k, 1)}
            dp = static_drop_prob if drop_prob is None else drop_prob
            variables = {"params": params, "batch_stats": batch_stats}
            if train:
                out, mut = self.model.apply(variables, image, alpha, train=True, drop_prob=dp,
                                            normalized=normalized, rngs=rngs, mutable=["batch_stats"])
                new_bs = mut["batch_stats"]
            else:
                out = self.model.apply(variables, image, alpha, train=False, normalized=normalized, rngs=rngs)
                new_bs = batch_stats
            logits, aux = out if isinstance(out, tuple) else (out, None)
            return logits, aux, new_bs

        return self.memo(("forward", bool(train), bool(normalized), static_drop_prob),
                         lambda: programs.trace_once(fwd))

    def train_loss_terms(self, params, batch_stats, alpha, batch, *, normalized=False):
        """The training loss with the auxiliary head: ``(total, (main_loss, logits, new_batch_stats))``."""
        logits, aux, new_bs = self.apply(params, batch_stats, alpha, batch, train=True, normalized=normalized)
        total, loss = with_auxiliary(logits, aux, batch["label"], self.cfg.model.aux_weight)
        return total, (loss, logits, new_bs)

    def losses(self, batch_stats):
        """``(train_loss, val_loss)`` with the ``loss(params, alpha, batch)`` signature, both
        in training mode with the batch's drop-path probability.

        The training loss includes the auxiliary head (weight ``aux_weight``) when the
        supernet has one; the validation loss uses the main head only.
        """

        def train_loss(params, alpha, batch):
            return self.train_loss_terms(params, batch_stats, alpha, batch)[0]

        def val_loss(params, alpha, batch):
            return self.val_loss_and_stats(params, batch_stats, alpha, batch)[0]

        return train_loss, val_loss

    def val_loss_and_stats(self, params, batch_stats, alpha, batch):
        """``(validation loss, BatchNorm running statistics after this forward)``: the
        validation loss of :meth:`losses` (training mode, main head) with the statistics its
        forward produces (the architecture step's update, ``model.arch_step_updates_bn``)."""
        logits, _, new_bs = self.apply(params, batch_stats, alpha, batch, train=True)
        return cross_entropy(logits, batch["label"]), new_bs

    def arch_step_updates_bn(self, state: SearchState) -> bool:
        """Whether the architecture step updates the running statistics of ``state``
        (``model.arch_step_updates_bn``, read as False from configs written before it)."""
        return bool(self.cfg.model.get("arch_step_updates_bn", False)) and bool(jax.tree.leaves(state.batch_stats))

    def estimator_options(self, state: SearchState, estimator: str | None = None) -> dict:
        """Options of ``estimator`` (default ``cfg.estimator``) at ``state``: the config's
        ``estimator_options`` (for the configured estimator), and for estimators with a
        virtual step the weight optimiser's current learning rate, momentum, weight decay
        and momentum buffer, so the virtual step is the real one; ``recompute`` from
        ``model.remat``. The one place these are assembled (search step and diagnostics)."""
        name = self.cfg.estimator if estimator is None else estimator
        opts = dict(self.cfg.estimator_options) if name == self.cfg.estimator else {}
        if name in hypergrad.NEEDS_INNER_STEP:
            o = self.cfg.optim
            opts.setdefault("inner_lr", self.lr_schedule()(state.step))
            opts.setdefault("momentum", o.momentum)
            opts.setdefault("weight_decay", optim.hyperparam(state.w_opt, "weight_decay"))
            opts.setdefault("momentum_buffer", optim.momentum_buffer(state.w_opt))
        if name in hypergrad.TAKES_RECOMPUTE:
            opts.setdefault("recompute", bool(self.cfg.model.remat))
        return opts

    def arch_update(self, state: SearchState, train_batch, val_batch, key=None):
        """One architecture step (the method's gradient and optimiser). Returns ``(state, metrics)``.

        With ``model.arch_step_updates_bn`` (default) the BatchNorm running statistics take
        one update from the architecture batch at the step's starting point, as the
        references' architecture forward does in training mode (DARTS ``architect.py``
        first order, and the SDARTS/MS-DARTS/BaLeNAS code built on it); the weight step then
        updates them from its own batch. (The reference's *second*-order path updates them
        from the training batch instead, in its virtual-step and finite-difference forwards;
        not reproduced.) For the engine's first-order gradient the statistics come from the
        gradient's own forward; other gradients add one forward."""
        update_bn = self.arch_step_updates_bn(state)
        batch_stats = state.batch_stats
        if update_bn and self.method.arch_grad is None and self.cfg.estimator == "first_order":
            # first order: the gradient's own forward gives the statistics (one forward)
            g, batch_stats = jax.grad(lambda a: self.val_loss_and_stats(state.params, state.batch_stats, a, val_batch),
                                      has_aux=True)(state.alpha)
            g1 = hypergrad.tree_norm(g)
            metrics, tx_args = {"g1_norm": g1, "g2_norm": jnp.zeros_like(g1)}, {}
        else:
            arch_grad = self.method.arch_grad or estimator_arch_grad
            out = arch_grad(self, state, train_batch, val_batch, key)
            g, metrics, tx_args = out[:3]
            if update_bn and len(out) > 3:  # the plug-in's own forwards gave the statistics
                batch_stats = out[3]
            elif update_bn:  # another forward at the step's starting point (not shared by XLA: +18% program)
                batch_stats = self.val_loss_and_stats(state.params, state.batch_stats, state.alpha, val_batch)[1]
        updates, a_opt = self.arch_tx().update(g, state.a_opt, state.alpha, **tx_args)
        alpha = optax.apply_updates(state.alpha, updates)
        return state.replace(alpha=alpha, a_opt=a_opt, batch_stats=batch_stats), metrics

    def weight_update(self, state: SearchState, train_batch, weights=None):
        """One SGD step on the supernet weights at ``softmax(alpha)``, or at the mixing
        ``weights`` given (a method's ``mix``); drop-path as the batch says. Returns
        ``(state, metrics)``."""
        mix, normalized = (state.alpha, False) if weights is None else (weights, True)

        def loss_fn(params):
            return self.train_loss_terms(params, state.batch_stats, mix, train_batch, normalized=normalized)

        (_, (loss, logits, new_bs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, w_opt = self.weight_tx().update(grads, state.w_opt, state.params)
        params = optax.apply_updates(state.params, updates)
        acc = jnp.mean(jnp.argmax(logits, -1) == train_batch["label"])
        return state.replace(params=params, batch_stats=new_bs, w_opt=w_opt), {"train_loss": loss, "train_acc": acc}

    def _arch_or_skip(self, state, tb, vb, key, do_update):
        # Weight-only warm-up epochs skip the architecture step's compute. The arch step is
        # traced once (the Python model code is the slow part of tracing) and replayed as a
        # jaxpr inside the cond; the skipped branch needs only its output shapes.
        closed, out_shape = jax.make_jaxpr(self.arch_update, return_shape=True)(state, tb, vb, key)
        arch = lambda s, t, v, k: jax.tree.unflatten(jax.tree.structure(out_shape),
                                                     jaxpr_as_fun(closed)(*jax.tree.leaves((s, t, v, k))))
        skipped = lambda s, t, v, k: (s, _zeros_like_struct(out_shape[1]))
        return jax.lax.cond(do_update > 0, arch, skipped, state, tb, vb, key)

    def _weight_step(self, state, tb, vb, k, sched):
        if self.method.mix is None:
            return self.weight_update(state, tb)
        weights, m_metrics = self.method.mix(self, state, tb, vb, jax.random.fold_in(k, 3), sched)
        state, w_metrics = self.weight_update(state, tb, weights=weights)
        return state, {**w_metrics, **m_metrics}

    def search_step(self, state: SearchState, train_batch, val_batch, sched):
        """One architecture and one weight update in the method's order.

        ``train_batch``/``val_batch``: uint8 ``{'image', 'label'}``; ``sched``:
        ``{'drop_prob', 'cutout_prob', 'arch_update'}`` scalars (traced: schedules and
        the arch warm-up never recompile).
        """
        k = fold_key(state.rng, state.step)
        tb, tb_arch, vb = self.step_batches(k, train_batch, val_batch, sched)
        k_arch = jax.random.fold_in(k, 2)
        order = self.update_order
        if order == "alpha_first":
            state, a_metrics = self._arch_or_skip(state, tb_arch, vb, k_arch, sched["arch_update"])
            state, w_metrics = self._weight_step(state, tb, vb, k, sched)
        elif order == "weights_first":
            state, w_metrics = self._weight_step(state, tb, vb, k, sched)
            state, a_metrics = self._arch_or_skip(state, tb_arch, vb, k_arch, sched["arch_update"])
        elif self._fused_one_level:  # simultaneous one-level: ONE joint gradient (StacNAS, Eq. 5-6)
            state, w_metrics, a_metrics = self._joint_one_level_step(state, tb, sched)
        else:  # simultaneous: both gradients at the same (w, alpha)
            a_state, a_metrics = self._arch_or_skip(state, tb_arch, vb, k_arch, sched["arch_update"])
            state, w_metrics = self._weight_step(state, tb, vb, k, sched)
            state = state.replace(alpha=a_state.alpha, a_opt=a_state.a_opt)
        return state.replace(step=state.step + 1), {**w_metrics, **a_metrics}

    @property
    def _fused_one_level(self) -> bool:
        """Simultaneous order with the ``one_level`` estimator, the method's own gradient and
        no mixing weights: both gradients are of the same training loss at the same point."""
        m = self.method
        return (self.update_order == "simultaneous" and self.cfg.estimator == "one_level" and m.arch_grad is None
                and m.mix is None)

    def _joint_one_level_step(self, state: SearchState, tb, sched):
        """One ``value_and_grad`` of the training loss (auxiliary head included) w.r.t.
        ``(params, alpha)`` on the weight step's batch, then both optimisers on those
        gradients (the weight optimiser's clipping acts on the weights only); alpha is kept
        in the weight-only warm-up. Same numbers as the two separate passes of the
        simultaneous order (tested), one forward and one backward instead of two each."""

        def loss_fn(params, alpha):
            return self.train_loss_terms(params, state.batch_stats, alpha, tb)

        (_, (loss, logits, new_bs)), (gw, ga) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            state.params, state.alpha)
        updates, w_opt = self.weight_tx().update(gw, state.w_opt, state.params)
        params = optax.apply_updates(state.params, updates)
        a_updates, a_opt = self.arch_tx().update(ga, state.a_opt, state.alpha)
        do = sched["arch_update"] > 0
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(do, n, o), new, old)
        alpha = keep(optax.apply_updates(state.alpha, a_updates), state.alpha)
        a_opt = keep(a_opt, state.a_opt)
        acc = jnp.mean(jnp.argmax(logits, -1) == tb["label"])
        state = state.replace(params=params, batch_stats=new_bs, w_opt=w_opt, alpha=alpha, a_opt=a_opt)
        g1 = jnp.where(do, hypergrad.tree_norm(ga), 0.0)
        return state, {"train_loss": loss, "train_acc": acc}, {"g1_norm": g1, "g2_norm": jnp.zeros_like(g1)}

    def step_batches(self, key, train_batch, val_batch, sched):
        """The preprocessed ``(weight batch, architecture-step training batch, architecture
        batch)`` of the step with key ``key``. Same crop/flip for the weight step and the
        architecture step's training batch. ``data.augment_val`` (the RobustDARTS/DARTS
        reference: both queues read the training images through the training transform)
        gives the architecture batch the training transform with cutout, and the
        architecture step the weight step's batch; otherwise the architecture batch is not
        augmented and cutout stays with the weight step. ``regularization.drop_path_arch``
        (reference) puts the epoch's drop-path into the architecture step's losses."""
        cp, dp = sched["cutout_prob"], sched["drop_prob"]
        dp_arch = dp if self.cfg.regularization.drop_path_arch else 0.0
        k_t, k_v = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
        tb = self.preprocess(k_t, train_batch, True, cp, dp)
        if self.cfg.data.augment_val:
            return tb, {**tb, "drop_prob": jnp.asarray(dp_arch, jnp.float32)}, \
                self.preprocess(k_v, val_batch, True, cp, dp_arch)
        return (tb, self.preprocess(k_t, train_batch, True, 0.0, dp_arch),
                self.preprocess(k_v, val_batch, False, 0.0, dp_arch))

    def eval_step(self, state: SearchState, batch, alpha=None, normalized=False):
        """Eval-mode loss/accuracy sums on a uint8 batch (``alpha`` overrides the state's)."""
        b = self.preprocess(jax.random.key(0), batch, False)
        a = state.alpha if alpha is None else alpha
        logits, _, _ = self.apply(state.params, state.batch_stats, a, b, train=False, normalized=normalized)
        n = logits.shape[0]
        return cross_entropy(logits, b["label"]) * n, jnp.sum(jnp.argmax(logits, -1) == b["label"])

    def schedule_values(self, epoch: int, reg: dict | None = None, overrides: dict | None = None) -> dict:
        """Per-epoch drop-path / cutout probabilities (linear ramps as RobustDARTS:
        ``max * epoch / (epochs - 1)``), whether alpha is updated, and the method's
        schedule values (``overrides``: a sweep's values of the method's fields). With
        ``regularization.cutout_needs_drop_path`` (the RobustDARTS code) cutout is off in
        a run whose maximum drop-path is 0 (per run of a sweep; after DARTS-ADA changes it)."""
        cfg = self.cfg
        frac = epoch / max(cfg.epochs - 1, 1)
        dp_max = (reg or {}).get("drop_path", cfg.regularization.drop_path)
        dp = dp_max * frac if cfg.regularization.ramp else dp_max
        cp = cfg.data.cutout_prob * frac if cfg.regularization.ramp_cutout else cfg.data.cutout_prob
        if cfg.regularization.cutout_needs_drop_path and dp_max == 0:
            cp = 0.0
        out = {"drop_prob": np.float32(dp), "cutout_prob": np.float32(cp),
               "arch_update": np.float32(epoch >= cfg.arch_start_epoch)}
        if self.method.schedule is not None:
            extra = self.method.schedule(cfg, epoch, dict(overrides or {}))
            clash = set(extra) & set(out)
            if clash:
                raise ValueError(f"method {self.method.name!r}: schedule values {sorted(clash)} clash with the engine's")
            out.update({k: np.float32(v) for k, v in extra.items()})
        return out


# ---------------------------------------------------------------- hooks/events
@dataclasses.dataclass(frozen=True)
class Stop:
    """End the search after this epoch; ``genotype`` (a ``Genotype.to_dict()``) replaces
    the last epoch's as the result (DARTS-ES returns an earlier architecture)."""

    reason: str
    genotype: dict | None = None


@dataclasses.dataclass(frozen=True)
class Rollback:
    """Restore the state after epoch ``to_epoch`` (an in-memory snapshot) and continue from there."""

    to_epoch: int


@dataclasses.dataclass(frozen=True)
class SetHyperparam:
    """Set ``name`` (``'weight_decay'``, in the optimiser state, or ``'drop_path'``, the
    maximum of the ramp) to ``value`` for the following epochs (applied after a rollback)."""

    name: str
    value: float


@dataclasses.dataclass(frozen=True)
class Select:
    """The search's result is ``genotype`` (a ``Genotype.to_dict()``; a method's selection
    such as BaLeNAS-TF), written to genotype.json as ``genotype`` with ``info`` as
    ``selection``; the last epoch's derived architecture stays ``last_genotype``."""

    genotype: dict
    info: dict | None = None


HYPERPARAMS = ("weight_decay", "drop_path")


class Hook:
    """Per-epoch extension point. ``after_epoch(runner, epoch, metrics)`` may add entries to
    ``metrics`` and returns None or a sequence of events (:class:`Stop`,
    :class:`Rollback`, :class:`SetHyperparam`, :class:`Select`). Every event of every hook is applied;
    incompatible events in one epoch raise :class:`HookConflictError`. State a hook needs
    on resume goes into ``state_dict``/``load_state_dict`` (JSON-able)."""

    name = "hook"
    rollback_horizon = 0
    """How many epochs back a :class:`Rollback` of this hook may go (the runner keeps that
    many snapshots, in memory and as checkpoints, so a rollback works after a resume too)."""

    def setup(self, runner: "Runner") -> None:
        pass

    def after_epoch(self, runner: "Runner", epoch: int, metrics: dict) -> Sequence | None:
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, d: dict) -> None:
        pass


def merge_events(events: list[tuple[str, Any]]) -> tuple[Stop | None, Rollback | None, dict[str, float]]:
    """``[(hook_name, event)]`` -> ``(stop, rollback, {hyperparam: value})`` (:class:`Select`
    events are applied separately, in order). Identical events from several hooks count
    once; anything else that cannot all be applied is a :class:`HookConflictError` naming
    the hooks."""
    stops, rollbacks, sets = [], [], {}
    events = [(h, ev) for h, ev in events if not isinstance(ev, Select)]

    def add(groups, ev, hook):  # events may hold dicts (a Stop's genotype): grouped by equality
        for e, hooks in groups:
            if e == ev:
                hooks.append(hook)
                return
        groups.append((ev, [hook]))

    for hook, ev in events:
        if isinstance(ev, Stop):
            add(stops, ev, hook)
        elif isinstance(ev, Rollback):
            add(rollbacks, ev, hook)
        elif isinstance(ev, SetHyperparam):
            if ev.name not in HYPERPARAMS:
                raise HookConflictError(f"hook {hook!r} sets unknown hyperparameter {ev.name!r}; accepted: "
                                        f"{', '.join(HYPERPARAMS)}")
            add(sets.setdefault(ev.name, []), float(ev.value), hook)
        else:
            raise HookConflictError(f"hook {hook!r} returned {ev!r}, not an event (Stop, Rollback, SetHyperparam, "
                                     "Select)")

    def who(groups):
        return sorted({h for _, hs in groups for h in hs})

    if len(stops) > 1:
        raise HookConflictError(f"hooks {who(stops)} ask to stop with different results: {[e for e, _ in stops]}")
    if len(rollbacks) > 1:
        raise HookConflictError(f"hooks {who(rollbacks)} ask to roll back to different epochs: "
                                f"{[e for e, _ in rollbacks]}")
    if stops and rollbacks:
        raise HookConflictError(f"hooks {who(stops)} ask to stop while {who(rollbacks)} ask to roll back")
    for name, vals in sets.items():
        if len(vals) > 1:
            raise HookConflictError(f"hooks {who(vals)} set {name} to different values {sorted(v for v, _ in vals)}")
    return (stops[0][0] if stops else None, rollbacks[0][0] if rollbacks else None,
            {name: vals[0][0] for name, vals in sets.items()})


def default_hooks(cfg, method: Method | None = None) -> list[Hook]:
    """The hooks of a search, in order: Hessian eigenvalues (``hessian_every``), then the
    method's (which may read the eigenvalues), then estimator diagnostics (``diagnose``)."""
    from jaxdarts import hooks as hooks_lib

    if method is None:
        from jaxdarts import methods as methods_lib

        method = methods_lib.get(cfg.method)
    hooks: list[Hook] = []
    if cfg.hessian_every:
        hooks.append(hooks_lib.HessianHook(cfg.hessian_every, cfg.hessian_topk, cfg.hessian_method,
                                           cfg.hessian_batch))
    hooks += list(method.hooks(cfg)) if method.hooks else []
    if cfg.diagnose:
        hooks.append(hooks_lib.DiagnoseHook())
    return hooks


# ------------------------------------------------------------------- runner
SWEEP_TARGETS = ("drop_path", "weight_decay", "seed")
SWEEP_MODES = ("batched", "sequential")


@dataclasses.dataclass(frozen=True)
class Sweep:
    """Several searches that differ only in ``target``, advanced together on the same batches.

    ``target``: ``'drop_path'`` (maximum of the ramp), ``'weight_decay'`` (weight optimiser),
    ``'seed'`` (initialisation and per-step randomness; the batch order is shared), or
    ``'<method>.<field>'``, a field the task's method lists in ``Method.sweepable`` (e.g.
    ``'msdarts.bandwidth'``; it reaches the step through the method's ``schedule``).
    ``mode='batched'``: one ``vmap``-ed step over the stacked states (one compiled
    program); ``'sequential'``: the runs one after another, epoch by epoch (same numbers)."""

    target: str
    values: tuple
    mode: str = "batched"

    def __post_init__(self):
        if self.target not in SWEEP_TARGETS and "." not in str(self.target):
            raise ValueError(f"unknown sweep target {self.target!r}; accepted: {', '.join(SWEEP_TARGETS)}, "
                             "or <method>.<field> for a field in the method's sweepable")
        if self.mode not in SWEEP_MODES:
            raise ValueError(f"unknown sweep mode {self.mode!r}; accepted: {', '.join(SWEEP_MODES)}")
        if not self.values:
            raise ValueError("a sweep needs at least one value")


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _index(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


class Runner:
    """Drives epochs of a :class:`SearchTask` (or of a :class:`Sweep` of them) in ``workdir``."""

    def __init__(self, task: SearchTask, workdir: str, hooks: list[Hook] | None = None, log=print,
                 sweep: Sweep | None = None):
        if sweep is not None and hooks:
            raise ValueError(f"hooks ({', '.join(h.name for h in hooks)}) act on one search; a sweep "
                             f"({sweep.target}) runs without them")
        if sweep is not None and sweep.target not in SWEEP_TARGETS:
            name, _, field = sweep.target.partition(".")
            if name != task.method.name or field not in task.method.sweepable:
                ok = [f"{task.method.name}.{f}" for f in task.method.sweepable]
                raise ValueError(f"unknown sweep target {sweep.target!r} for method {task.method.name!r}; accepted: "
                                 f"{', '.join(SWEEP_TARGETS + tuple(ok))}")
        self.task = task
        self.cfg = task.cfg
        self.workdir = workdir
        self.hooks = list(hooks or [])
        self.log = log
        self.sweep = sweep
        self.state: SearchState | None = None
        self.epoch = 0  # next epoch to run
        self.reg = {"drop_path": float(self.cfg.regularization.drop_path),
                    "weight_decay": float(self.cfg.optim.weight_decay)}
        self.history: list[dict] = []
        self.snapshots: dict[int, SearchState] = {}  # epoch -> state after that epoch (for rollback)
        self.extra: dict = {}
        os.makedirs(workdir, exist_ok=True)
        from jaxdarts import checkpoint as ckpt_lib

        self.horizon = max([h.rollback_horizon for h in self.hooks], default=0)
        keep = self.cfg.checkpoint_keep if not self.horizon else max(self.cfg.checkpoint_keep, self.horizon + 2)
        self.ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=keep)
        self._compiled = None
        from jaxdarts import parallel

        n = int(self.cfg.get("mesh", {}).get("num_devices", 1))
        self.mesh = parallel.make_mesh(n) if n != 1 else None  # data-parallel search over a device mesh
        for h in self.hooks:
            h.setup(self)

    @property
    def num_runs(self) -> int:
        return 1 if self.sweep is None else len(self.sweep.values)

    # ------------------------------------------------------------ state
    def init_state(self) -> SearchState:
        if self.sweep is None:
            return self.task.init_state()
        s = self.sweep
        if s.target == "seed":
            return _stack([self.task.init_state(int(v)) for v in s.values])
        base = self.task.init_state()
        if s.target == "weight_decay":
            return _stack([base.replace(w_opt=optim.set_hyperparam(base.w_opt, "weight_decay", v))
                           for v in s.values])
        return _stack([base] * len(s.values))

    def _fns(self):
        """The jitted step and evaluation (built once the lowering is settled)."""
        if self._compiled is None:
            task, donate = self.task, (0,) if self.cfg.donate else ()
            batched = self.sweep is not None and self.sweep.mode == "batched"
            step = jax.vmap(task.search_step, in_axes=(0, None, None, 0)) if batched else task.search_step
            ev = task.eval_step
            if self.sweep is not None:
                def ev(state, batch, alpha=None, normalized=False):
                    fn = lambda s: task.eval_step(s, batch, alpha, normalized=normalized)
                    return jax.vmap(fn)(state)
            if self.mesh is not None:  # batches sharded over the mesh, everything else replicated
                from jaxdarts import parallel

                rep = parallel.replicated(self.mesh)
                mesh_key = (self.mesh.axis_names, tuple(d.id for d in self.mesh.devices.flat))
                self._compiled = (task.memo(("step", batched, donate, mesh_key),
                                            lambda: jax.jit(step, donate_argnums=donate, out_shardings=rep)),
                                  task.memo(("eval", self.sweep is not None, mesh_key),
                                            lambda: jax.jit(ev, static_argnames=("normalized",))))
                return self._compiled
            self._compiled = (task.memo(("step", batched, donate), lambda: jax.jit(step, donate_argnums=donate)),
                              task.memo(("eval", self.sweep is not None),
                                        lambda: jax.jit(ev, static_argnames=("normalized",))))
        return self._compiled

    # -------------------------------------------------------------- resume
    def _backend_record(self) -> dict:
        return {"backend": jax.default_backend(), "lowering": self.task.lowering,
                "devices": [str(d) for d in jax.devices()], "jax": jax.__version__}

    def _template_for(self, meta: dict):
        """Checks the checkpoint's lowering against this run's and returns a template state.

        ``model.depthwise='auto'`` follows the checkpoint (its ``batch_stats`` tree depends
        on the lowering; both lowerings compute the same function); an explicit lowering that
        differs from the checkpoint's is refused with a message."""
        saved = meta.get("lowering")
        if saved and saved != self.task.lowering:
            if self.cfg.model.depthwise != "auto":
                raise ValueError(f"workdir {self.workdir} was searched with the {saved!r} lowering; this run asks "
                                 f"for config.model.depthwise={self.cfg.model.depthwise!r}, whose batch statistics "
                                 f"do not match: resume with --config.model.depthwise={saved} (or auto)")
            self.log(f"resuming with the {saved!r} lowering of the checkpoint (this backend, "
                     f"{jax.default_backend()}, would pick {self.task.lowering!r}; same function, other program)")
            self.task = self.task.with_lowering(saved)
            self._compiled = None
        return self.init_state()

    def restore_or_init(self):
        if self.ckpt.all_steps():
            self._check_config()
        restored = self.ckpt.restore_latest(self._template_for, log=self.log)
        if restored is None:
            self.state = self.init_state()
            self._write_config()
            io_lib.write_json(os.path.join(self.workdir, "backend.json"), self._backend_record())
            self._truncate_metrics(0)
            self._truncate_events()
            return False
        self.state, meta = restored
        self.epoch = meta["epoch"]
        self.reg = meta["reg"]
        self.extra = meta.get("extra", {})
        for h in self.hooks:
            h.load_state_dict(meta.get("hooks", {}).get(h.name, {}))
        self._truncate_events()
        self.history = self._truncate_metrics(self.epoch)
        self.log(f"resumed from {self.ckpt.directory} at epoch {self.epoch}")
        return True

    def _config_json(self):
        d = json.loads(self.cfg.to_json_best_effort())
        for k in ("log_every", "progress"):
            d.pop(k, None)
        return d

    def _write_config(self):
        io_lib.write_json(os.path.join(self.workdir, "config.json"), self._config_json(), sort_keys=True)

    def _check_config(self):
        old = io_lib.read_json(os.path.join(self.workdir, "config.json"))
        if old is None:
            return
        new = self._config_json()
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            raise ValueError(f"workdir {self.workdir} holds a run with a different config (fields {diff}); "
                             "use a new --workdir or the same config to resume")

    def _metrics_path(self):
        return os.path.join(self.workdir, "metrics.jsonl")

    def _events_path(self) -> str:
        return os.path.join(self.workdir, "events.jsonl")

    def _truncate_events(self):
        """Keeps the events the restored checkpoint had seen (``extra['num_events']``)."""
        rows = io_lib.read_jsonl(self._events_path())
        if rows or os.path.exists(self._events_path()):
            io_lib.write_jsonl(self._events_path(), rows[:self.extra.get("num_events", 0)])

    def _compile_message(self) -> str:
        prev = io_lib.read_json(os.path.join(self.workdir, "backend.json"), {}).get("first_step_seconds")
        if prev is not None:
            return (f"compiling the search step (~{prev:.0f} s last time in this workdir; less when the "
                    "persistent compilation cache has it)")
        return ("compiling the search step (XLA, first call: seconds for tiny networks, 1-5 minutes for the "
                "DARTS supernet on a CPU; cached for the next run)")

    def _truncate_metrics(self, epochs_done: int) -> list[dict]:
        """Keeps metrics lines of epochs < epochs_done (atomically rewritten)."""
        kept = [d for d in io_lib.read_jsonl(self._metrics_path()) if d.get("epoch", 0) < epochs_done]
        io_lib.write_jsonl(self._metrics_path(), kept)
        return kept

    # -------------------------------------------------------------- epochs
    def set_hyperparam(self, name: str, value: float):
        """Sets ``weight_decay`` (in the optimiser state) or ``drop_path`` (max probability)."""
        if name not in HYPERPARAMS:
            raise ValueError(f"unknown hyperparameter {name!r}; accepted: {', '.join(HYPERPARAMS)}")
        self.reg[name] = float(value)
        if name == "weight_decay":
            self.state = self.state.replace(w_opt=optim.set_hyperparam(self.state.w_opt, "weight_decay", value))

    def _sched(self, epoch: int):
        task = self.task
        if self.sweep is None:
            return task.schedule_values(epoch, self.reg)
        target = self.sweep.target
        field = target.partition(".")[2] if target not in SWEEP_TARGETS else None
        per_run = [task.schedule_values(epoch, {**self.reg, "drop_path": v} if target == "drop_path" else self.reg,
                                        {field: v} if field else None) for v in self.sweep.values]
        return {k: np.stack([s[k] for s in per_run]) for k in per_run[0]}

    def _train(self, epoch: int, sched, progress):
        """Runs the epoch's steps; returns per-step metrics (arrays over runs for a sweep)."""
        task, cfg = self.task, self.cfg
        step, _ = self._fns()
        spe = task.steps_per_epoch
        pairs = lambda: zip(task.train_stream.epoch(epoch, 0, spe), task.val_stream.epoch(epoch, 0, spe))
        if self.mesh is not None:
            self.state = jax.device_put(self.state, parallel_replicated(self.mesh))
            plain = pairs
            pairs = lambda: ((_to_mesh(self.mesh, tb), _to_mesh(self.mesh, vb)) for tb, vb in plain())  # noqa: E731
        if self.sweep is not None and self.sweep.mode == "sequential":
            states, per_run = [], []
            for r in range(self.num_runs):
                st, s_r, ms = _index(self.state, r), {k: v[r] for k, v in sched.items()}, []
                for tb, vb in pairs():
                    st, m = step(st, tb, vb, s_r)
                    ms.append(m)
                states.append(st)
                per_run.append(jax.device_get(ms))
                progress.update(spe * (r + 1) // self.num_runs, 0.0, 0.0)
            self.state = _stack(states)
            return [jax.tree.map(lambda *xs: np.stack(xs), *ms) for ms in zip(*per_run)]
        out, pending = [], []
        for i, (tb, vb) in enumerate(pairs()):
            first = not getattr(self, "_stepped", False)
            if first:
                t_first = time.time()
                self.log(self._compile_message())
            self.state, m = step(self.state, tb, vb, sched)
            if first:
                jax.block_until_ready(m)
                self._stepped = True
                secs = time.time() - t_first
                self.log(f"search step compiled and ran once in {secs:.0f} s")
                rec = io_lib.read_json(os.path.join(self.workdir, "backend.json"), {})
                io_lib.write_json(os.path.join(self.workdir, "backend.json"), {**rec, "first_step_seconds": secs})
            pending.append(m)
            if (i + 1) % cfg.log_every == 0 or i + 1 == spe:
                out += jax.device_get(pending)
                pending = []
                loss = np.mean([np.mean(m["train_loss"]) for m in out])
                if not math.isfinite(loss):
                    raise NonFiniteLossError(
                        f"non-finite training loss at epoch {epoch} step {i}; stopped. The last good checkpoint "
                        f"(epoch {epoch - 1}) is kept in {self.ckpt.directory}")
                progress.update(i + 1, loss, np.mean([np.mean(m["train_acc"]) for m in out]))
        return out

    def run_epoch(self, epoch: int) -> dict:
        task, cfg = self.task, self.cfg
        sched = self._sched(epoch)
        spe = task.steps_per_epoch
        t0 = time.time()
        progress = Progress(spe, epoch, cfg.epochs, cfg.progress, self.log)
        steps = self._train(epoch, sched, progress)
        train_time = time.time() - t0
        means = {k: sum(np.asarray(m[k], np.float64) for m in steps) / len(steps) for k in steps[0]}
        metrics = {"epoch": epoch, **{k: _scalar_or_list(v) for k, v in means.items()}}
        metrics["lr"] = float(task.lr_schedule()(epoch * spe))
        metrics.update({k: _scalar_or_list(v) for k, v in sched.items()})
        metrics["weight_decay"] = self.reg["weight_decay"]
        if self.sweep is not None:
            metrics["sweep"] = {"target": self.sweep.target, "values": list(self.sweep.values)}
            if self.sweep.target == "weight_decay":
                metrics["weight_decay"] = list(self.sweep.values)
        metrics.update(self.evaluate())
        runs = [self.state.alpha] if self.sweep is None else [_index(self.state.alpha, r)
                                                              for r in range(self.num_runs)]
        summaries = [self._alpha_summary(a) for a in runs]
        for k in summaries[0]:
            metrics[k] = summaries[0][k] if self.sweep is None else [s[k] for s in summaries]
        metrics["train_time"] = train_time
        metrics["steps_per_sec"] = spe * self.num_runs / train_time
        progress.done(metrics)
        return metrics

    def _alpha_summary(self, alpha) -> dict:
        task = self.task
        g = task.derive(alpha)
        out = {"genotype": g.to_dict()}
        if not g.per_cell and task.space.macro == "darts":
            out["genotype_str"] = g.to_pytorch_str()
        if task.space.macro == "nb201":
            out["nb201_str"] = g.to_nb201_str()
        out["alpha_softmax"] = io_lib.jsonable(supernet_lib.mixing_weights(task.space, alpha))
        out["skip_connect_normal"] = sum(op == "skip_connect" for op, _ in g.all_genes("normal"))
        return out

    def evaluate(self, alpha=None, normalized=False, prefix="val") -> dict:
        """Eval-mode loss/accuracy of the supernet on the architecture split (lists over
        runs for a sweep)."""
        task, cfg = self.task, self.cfg
        _, ev = self._fns()
        x, y = task.eval_data
        bs = cfg.eval_batch_size or cfg.batch_size
        nb = len(x) // bs
        if cfg.eval_batches and cfg.eval_batches > 0:
            nb = min(nb, cfg.eval_batches)
        loss = correct = 0.0
        for i in range(nb):
            b = {"image": x[i * bs:(i + 1) * bs], "label": y[i * bs:(i + 1) * bs]}
            l, c = ev(self.state, b, alpha, normalized=normalized)
            loss, correct = loss + l, correct + c
        n = max(nb * bs, 1)
        loss, correct = np.asarray(loss, np.float64), np.asarray(correct, np.float64)
        return {f"{prefix}_loss": _scalar_or_list(loss / n), f"{prefix}_acc": _scalar_or_list(correct / n)}

    def save(self, epochs_done: int):
        meta = {"epoch": epochs_done, "reg": self.reg, "extra": self.extra, "lowering": self.task.lowering,
                "hooks": {h.name: h.state_dict() for h in self.hooks}}
        self.ckpt.save(epochs_done, self.state, meta)

    def append_metrics(self, metrics: dict):
        self.history.append(metrics)
        io_lib.append_jsonl(self._metrics_path(), metrics)
        self._tensorboard(metrics)

    def _tensorboard(self, metrics: dict | None = None, final=None):
        """Scalars of a metrics line, and cell images every ``tensorboard_images_every``
        epochs and of the final genotype (``cfg.tensorboard``)."""
        if not self.cfg.get("tensorboard", False) or jax.process_index() != 0:
            return
        from jaxdarts import tensorboard as tb

        if getattr(self, "_tb", None) is None:
            self._tb = tb.SummaryWriter(os.path.join(self.workdir, "tensorboard"))
        step = self.epoch if metrics is None else metrics["epoch"] + 1
        if metrics is not None:
            self._tb.scalars(tb.flat_scalars(metrics), step)
        every = self.cfg.get("tensorboard_images_every", 0)
        gene = final if final is not None else (metrics or {}).get("genotype")
        if isinstance(gene, dict) and (final is not None or (every and step % every == 0)):
            try:
                from jaxdarts import report

                nb201 = self.task.space.macro == "nb201"
                for t in ("normal", "reduce"):
                    cells = gene.get(t) or []
                    if cells and not (cells and isinstance(cells[0][0], (list, tuple))):  # not per-cell
                        png = report.cell_diagram([tuple(e) for e in cells], f"{t} cell, epoch {step}", nb201,
                                                  gene.get(f"{t}_concat"), engine="matplotlib")
                        import base64

                        self._tb.image(f"cells/{'final_' if final is not None else ''}{t}", base64.b64decode(png), step)
            except ImportError:  # no matplotlib: scalars only
                pass
        self._tb.flush()

    def rollback(self, to_epoch: int):
        """Restores the in-memory snapshot taken after epoch ``to_epoch`` (bit-identical)
        and rewrites metrics.jsonl to the epochs up to it."""
        if to_epoch in self.snapshots:
            self.state = jax.tree.map(jnp.array, self.snapshots[to_epoch])
        elif to_epoch + 1 in self.ckpt.all_steps():  # after a resume: the checkpoint of that epoch
            self.state, _ = self.ckpt.restore(to_epoch + 1, self.init_state())
        else:
            raise KeyError(f"no snapshot or checkpoint of epoch {to_epoch}; have snapshots {sorted(self.snapshots)} "
                           f"and checkpoints after epochs {[s - 1 for s in self.ckpt.all_steps()]}")
        self.epoch = to_epoch + 1
        self.history = self._truncate_metrics(self.epoch)
        self.snapshots = {e: s for e, s in self.snapshots.items() if e <= to_epoch}

    def _apply_events(self, events) -> str | None:
        stop, rollback, sets = merge_events(events)
        done = self.epoch - 1  # the epoch that just ran
        log = []
        if rollback is not None:
            log.append({"epoch": done, "kind": "rollback", "to_epoch": rollback.to_epoch})
        log += [{"epoch": done, "kind": "set", "name": k, "value": v} for k, v in sets.items()]
        if stop is not None:
            log.append({"epoch": done, "kind": "stop", "reason": stop.reason})
        for row in log:  # kept across rollbacks (metrics.jsonl is truncated by them): reports mark them
            io_lib.append_jsonl(self._events_path(), io_lib.jsonable(row))
        self.extra["num_events"] = self.extra.get("num_events", 0) + len(log)  # checkpointed: resume truncates
        for _, ev in events:
            if isinstance(ev, Select):
                self.extra["final_genotype"] = ev.genotype
                self.extra["selection"] = ev.info
        if rollback is not None:
            self.rollback(rollback.to_epoch)
        for name, value in sets.items():
            self.set_hyperparam(name, value)
        if stop is not None:
            self.extra["stop_reason"] = stop.reason
            if stop.genotype is not None:
                self.extra["final_genotype"] = stop.genotype
            return stop.reason
        return None

    def run(self, max_epochs: int | None = None) -> dict:
        """Runs (or resumes) to ``cfg.epochs``; returns a summary with the genotype."""
        if self.state is None:
            self.restore_or_init()
        stop_reason = self.extra.get("stop_reason")
        stop_after = None if max_epochs is None else self.epoch + max_epochs
        while self.epoch < self.cfg.epochs and stop_reason is None:
            if stop_after is not None and self.epoch >= stop_after:
                break
            epoch = self.epoch
            metrics = self.run_epoch(epoch)
            if self.hooks:
                self.snapshots[epoch] = jax.tree.map(lambda x: jnp.array(x, copy=True), self.state)
                keep = max(self.cfg.snapshot_window, self.horizon + 1)
                self.snapshots = {e: s for e, s in self.snapshots.items() if e > epoch - keep}
            events = []
            for h in self.hooks:
                events += [(h.name, ev) for ev in (h.after_epoch(self, epoch, metrics) or ())]
            self.append_metrics(metrics)
            self.epoch = epoch + 1
            stop_reason = self._apply_events(events)
            self.save(self.epoch)
        return self.finish()

    @property
    def finished(self) -> bool:
        return self.epoch >= self.cfg.epochs or self.extra.get("stop_reason") is not None

    def finish(self) -> dict:
        if self.sweep is not None:
            gs = [self.task.derive(_index(self.state.alpha, r)) for r in range(self.num_runs)]
            out = {"sweep": {"target": self.sweep.target, "values": list(self.sweep.values)},
                   "genotypes": [g.to_dict() for g in gs], "epochs_run": self.epoch, "finished": self.finished}
            io_lib.write_json(os.path.join(self.workdir, "genotype.json"), out)
            return out
        g = self.task.derive(self.state.alpha)
        chosen = self.extra.get("final_genotype")
        final = genotype_lib.Genotype.from_json(chosen) if chosen else g
        out = {"genotype": final.to_dict(), "last_genotype": g.to_dict(), "epochs_run": self.epoch,
               "stop_reason": self.extra.get("stop_reason"), "finished": self.finished}
        if self.extra.get("selection") is not None:
            out["selection"] = self.extra["selection"]
        if self.task.space.macro == "nb201":
            out["nb201_str"] = final.to_nb201_str()
        if not final.per_cell and self.task.space.macro == "darts":
            out["genotype_str"] = final.to_pytorch_str()
        if self.cfg.discretization_gap:
            from jaxdarts import analysis

            out["discretization"] = analysis.discretization_gap(self.evaluate, self.task.space, final)
        io_lib.write_json(os.path.join(self.workdir, "genotype.json"), out)
        self._tensorboard(final=final.to_dict())
        self.log("final genotype:\n" + final.render())
        return out


def parallel_replicated(mesh):
    from jaxdarts import parallel

    return parallel.replicated(mesh)


def _to_mesh(mesh, batch: dict) -> dict:
    """A global batch (every host holds all of it) -> arrays sharded over the mesh, each
    host contributing its contiguous rows."""
    from jaxdarts import parallel

    p, P = jax.process_index(), jax.process_count()
    n = len(next(iter(batch.values())))
    parallel.check_batch(n, mesh)
    return parallel.global_batch(mesh, {k: v[p * n // P:(p + 1) * n // P] for k, v in batch.items()})


def _scalar_or_list(v):
    v = np.asarray(v)
    return float(v) if v.ndim == 0 else v.tolist()


class Progress:
    """A one-line progress bar on terminals, plain log lines otherwise."""

    def __init__(self, total, epoch, epochs, mode, log):
        self.total, self.epoch, self.epochs, self.log = total, epoch, epochs, log
        self.tty = (mode == "bar") or (mode == "auto" and sys.stderr.isatty())
        self.t0 = time.time()

    def update(self, i, loss, acc):
        el = time.time() - self.t0
        eta = el / i * (self.total - i)
        msg = (f"epoch {self.epoch + 1}/{self.epochs} step {i}/{self.total} loss {loss:.4f} "
               f"acc {acc:.3f} {i / el:.2f} it/s ETA {eta:.0f}s")
        if self.tty:
            bar = "#" * int(20 * i / self.total)
            sys.stderr.write(f"\r[{bar:<20}] {msg}")
            sys.stderr.flush()
        else:
            self.log(msg)

    def done(self, m):
        if self.tty:
            sys.stderr.write("\n")
        f = lambda k: float(np.mean(m[k]))
        self.log(f"epoch {m['epoch'] + 1}/{self.epochs}: train loss {f('train_loss'):.4f} acc {f('train_acc'):.3f} | "
                 f"val loss {f('val_loss'):.4f} acc {f('val_acc'):.3f} | lr {m['lr']:.5f} | "
                 f"skip(normal) {m['skip_connect_normal']} | {m['steps_per_sec']:.2f} steps/s")


# ------------------------------------------------------------------ programs
def run_single(cfg, workdir: str, *, log=print, max_epochs: int | None = None, hooks: list[Hook] | None = None,
               task: SearchTask | None = None) -> dict:
    """One search (the engine hooks and the method's), resumable; with
    ``cfg.num_seeds > 1`` a seed sweep (seeds ``cfg.seed, cfg.seed + 1, ...``) in one
    ``vmap``-ed program instead."""
    task = SearchTask.from_config(cfg) if task is None else task
    if cfg.num_seeds > 1:
        return run_sweep(task, workdir, Sweep("seed", tuple(cfg.seed + i for i in range(cfg.num_seeds))), log=log,
                         max_epochs=max_epochs)
    runner = Runner(task, workdir, default_hooks(cfg, task.method) + list(hooks or []), log=log)
    return runner.run(max_epochs=max_epochs)


def run_sweep(task: SearchTask, workdir: str, sweep: Sweep, *, log=print, max_epochs: int | None = None) -> dict:
    """The searches of ``sweep`` in ``workdir`` (resumable, ``max_epochs`` as for one search)."""
    return Runner(task, workdir, log=log, sweep=sweep).run(max_epochs=max_epochs)


def run(cfg, workdir: str, hooks: list[Hook] | None = None, log=print, max_epochs: int | None = None) -> dict:
    """Runs (or resumes) the program of ``cfg.method`` in ``workdir``."""
    from jaxdarts import config as config_lib
    from jaxdarts import methods as methods_lib

    config_lib.validate(cfg)
    program = methods_lib.get(cfg.method).program or run_single
    return program(cfg, workdir, log=log, max_epochs=max_epochs, hooks=hooks)
