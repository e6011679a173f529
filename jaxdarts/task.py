"""The search task: everything static about one search, and its pure, traced pieces.

:class:`SearchTask` holds the config, the method (:class:`jaxdarts.contract.Method`), the
space, the supernet, the data streams and the lowering; its methods are the functions the
programs are made of: preprocessing, the supernet forward, the losses
``loss(params, alpha, batch)``, the architecture and weight updates, the search step, the
evaluation step and the schedule. It reads no files and keeps no mutable state (the
:class:`jaxdarts.runner.Runner` drives epochs). Every traced call of a method's function
goes through one :class:`jaxdarts.contract.Context`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.extend.core import jaxpr_as_fun

from jaxdarts import config as config_lib
from jaxdarts import data as data_lib
from jaxdarts import genotype as genotype_lib
from jaxdarts import hypergrad
from jaxdarts import kernels
from jaxdarts import registry as methods_lib  # finds methods by name; imports none
from jaxdarts import optim
from jaxdarts import jit_cache
from jaxdarts import spaces as spaces_lib
from jaxdarts import supernet as supernet_lib
from jaxdarts.contract import ArchGrad, Context, Method, Mix, SearchState, fold_key
from jaxdarts.losses import cross_entropy, with_auxiliary

__all__ = ["SearchTask", "estimator_arch_grad", "fresh_noise_key", "task_signature", "step_spec", "STEP_FIELDS"]


def estimator_arch_grad(ctx: Context, state: SearchState) -> ArchGrad:
    """The hypergradient estimator named in ``cfg.estimator`` (:attr:`SearchTask.estimator`)
    with the options of :meth:`SearchTask.estimator_options`, on ``ctx.arch_train_batch``
    and ``ctx.arch_batch``; metrics ``g1_norm``/``g2_norm`` (and the solver residual of
    ``implicit``)."""
    task = ctx.task
    train_loss, val_loss = task.losses(state.batch_stats)
    est = hypergrad.get(task.estimator)
    want_aux = task.estimator != "unrolled" or task.spec.log_hypergrad_terms
    out = est(train_loss, val_loss, state.params, state.alpha, ctx.arch_train_batch, ctx.arch_batch,
              has_aux=want_aux, **task.estimator_options(state))
    g, aux = out if want_aux else (out, {})
    metrics = {}
    if aux:
        metrics = {"g1_norm": hypergrad.tree_norm(aux["g1"]), "g2_norm": hypergrad.tree_norm(aux["g2"])}
        if "residual" in aux:
            metrics["solver_residual"] = aux["residual"]
    return ArchGrad(g, metrics)


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


ENGINE_SCHEDULE = ("drop_prob", "cutout_prob", "arch_update")
"""The engine's schedule values (every other value of ``sched`` is the method's)."""


def _zeros_like_struct(tree):
    return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), tree)


# --------------------------------------------------------------------- task
STEP_FIELDS = ("method", "dataset", "space", "batch_size", "epochs", "steps_per_epoch", "estimator",
               "estimator_options", "update_order", "alpha_init_scale", "log_hypergrad_terms", "hessian_method",
               "hessian_batch", "hessian_topk", "model", "optim", "regularization", "data.image_size",
               "data.max_examples", "data.train_portion", "data.augment", "data.augment_val", "data.crop_padding",
               "data.crop_fill", "data.cutout", "data.cutout_prob", "data.flip")
"""The config fields a search's programs are built from (a section name: all of it), the
method's own section besides: :func:`step_spec`. The rest of the config (seed, logging,
cadence, files, the warm-up's epoch, the mesh) reaches the programs only as traced values or
memo keys, so tasks that differ only there share programs. ``tests/test_programs.py`` traces
every method's programs with a config that records what is read and checks that it is all
here."""


def step_spec(cfg, method: Method) -> ml_collections.FrozenConfigDict:
    """The :data:`STEP_FIELDS` of ``cfg`` and the method's section, read once into an
    immutable, hashable value (a field an older config lacks is left out)."""
    out: dict = {}
    for f in STEP_FIELDS + ((method.name,) if method.config is not None else ()):
        *path, last = f.split(".")
        node = cfg
        for p in path:
            node = node.get(p) if node is not None else None
        if node is None or last not in node:
            continue
        v = node[last]
        d = out
        for p in path:
            d = d.setdefault(p, {})
        d[last] = v.to_dict() if isinstance(v, ml_collections.ConfigDict) else v
    return ml_collections.FrozenConfigDict(out)


def resolve_edge_loop(name: str) -> str:
    """``config.model.edge_loop``: ``'auto'`` -> ``'scan'`` (a resumed run then follows its
    checkpoint, :class:`jaxdarts.runner.Runner`); ``'scan'``/``'vmap'`` as they are."""
    return "scan" if name == "auto" else supernet_lib.check_edge_loop(name)


def task_signature(task: "SearchTask") -> tuple:
    """The static signature of a task's programs: its :func:`step_spec`, the method (the
    registry's object, compared by identity of its functions), the lowering, the data's
    shapes and sizes (they set steps per epoch, the learning-rate schedule and VAdam's dataset
    size) and its normalisation and flips."""
    d = task.spec.to_dict()
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
        """Validates ``cfg`` (:func:`jaxdarts.config.validate`), loads ``cfg.dataset`` and
        builds the task."""
        config_lib.validate(cfg)
        d = cfg.data
        train, val = data_lib.load_search_data(cfg.dataset, d.data_dir, d.max_examples, d.image_size,
                                               d.train_portion)
        return cls._build(cfg, train, val, data_lib.info(cfg.dataset), method, lowering)

    @classmethod
    def from_arrays(cls, cfg, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                    info: data_lib.DatasetInfo, *, method: Method | None = None,
                    lowering: str | None = None) -> "SearchTask":
        """A task on in-memory data: ``train``/``val`` are ``(uint8 images NHWC, int labels)``
        for the weights and the architecture; ``info`` gives classes, normalisation and
        whether flips preserve labels. ``method`` defaults to ``cfg.method`` from the
        registry; ``lowering`` to ``cfg.model.depthwise`` resolved for this backend. Validates
        ``cfg`` (:func:`jaxdarts.config.validate`)."""
        config_lib.validate(cfg)
        return cls._build(cfg, train, val, info, method, lowering)

    @classmethod
    def _build(cls, cfg, train, val, info, method, lowering) -> "SearchTask":
        if method is None:
            method = methods_lib.get(cfg.method)
        lowering = kernels.resolve_lowering(lowering or cfg.model.depthwise)
        space = spaces_lib.get(cfg.space)
        model = supernet_lib.Supernet(space, info.num_classes, C=cfg.model.C, layers=cfg.model.layers,
                                      auxiliary=cfg.model.auxiliary, remat=cfg.model.remat, lowering=lowering,
                                      drop_path_scope=cfg.regularization.drop_path_scope,
                                      track_running_stats=cfg.model.track_running_stats,
                                      partial_channels=int(cfg.model.get("partial_channels", 1)),
                                      edge_loop=resolve_edge_loop(cfg.model.get("edge_loop", "auto")))
        return cls(cfg, method, space, model,
                   data_lib.BatchStream(*train, cfg.batch_size, cfg.seed),
                   data_lib.BatchStream(*val, cfg.batch_size, cfg.seed + 7919),
                   tuple(val), info, lowering)

    def with_edge_loop(self, edge_loop: str) -> "SearchTask":
        """The task with the supernet's edges run as ``edge_loop`` (a resumed checkpoint's)."""
        return dataclasses.replace(self, model=self.model.clone(edge_loop=resolve_edge_loop(edge_loop)))

    def with_lowering(self, lowering: str) -> "SearchTask":
        lowering = kernels.resolve_lowering(lowering)
        return dataclasses.replace(self, model=self.model.clone(lowering=lowering), lowering=lowering)

    @property
    def steps_per_epoch(self) -> int:
        n = self.train_stream.steps_per_epoch
        return min(n, self.spec.steps_per_epoch) if self.spec.steps_per_epoch else n

    def lr_schedule(self):
        o = self.spec.optim
        sched = optim.cosine_step_schedule if o.lr_schedule == "step_cosine" else optim.cosine_epoch_schedule
        return sched(o.lr, o.lr_min, self.spec.epochs, self.steps_per_epoch)

    def weight_tx(self):
        o = self.spec.optim
        return optim.sgd_injectable(self.lr_schedule(), o.momentum, o.weight_decay, o.grad_clip or None,
                                    o.nesterov)

    @property
    def method_config(self):
        """The method's own config section, frozen, from the step spec (None when it has none)."""
        return self.method.section(self.spec)

    @property
    def estimator(self) -> str:
        """The configured hypergradient estimator (``cfg.estimator``)."""
        return self.spec.estimator

    def context(self, **kw) -> Context:
        """A :class:`~jaxdarts.contract.Context` of this task (the method's section included)."""
        return Context(task=self, config=self.method_config, **kw)

    def arch_tx(self):
        if self.method.arch_tx is not None:
            return self.method.arch_tx(self.context())
        o = self.spec.optim
        return optim.adam(o.arch_lr, o.arch_betas[0], o.arch_betas[1], o.arch_weight_decay)

    @property
    def update_order(self) -> str:
        """``cfg.update_order``, or the method's when that is ``'method'``."""
        o = self.spec.update_order
        return self.method.update_order if o == "method" else o

    def derive(self, alpha) -> genotype_lib.Genotype:
        return (self.method.derive or genotype_lib.derive)(self.space, alpha)

    @property
    def spec(self) -> ml_collections.FrozenConfigDict:
        """The config fields the programs are built from (:func:`step_spec`), read once. The
        traced functions read their fields here (a field missing from it fails at trace
        time), the method's section included (:attr:`method_config`, the ``Context``'s
        ``config``); host code (seeds, schedules, logging) reads :attr:`cfg`."""
        if "_spec" not in self.__dict__:  # not a field: the task stays frozen
            self.__dict__["_spec"] = step_spec(self.cfg, self.method)
        return self.__dict__["_spec"]

    @property
    def signature(self) -> tuple:
        """What the task's traced programs read (:func:`task_signature`); tasks with equal
        signatures share their jitted programs (:meth:`memo`)."""
        if "_signature" not in self.__dict__:  # not a field: the task stays frozen
            self.__dict__["_signature"] = task_signature(self)
        return self.__dict__["_signature"]

    def memo(self, key, build: Callable[[], Any]):
        """``build()`` once per process for this task's :attr:`signature` and ``key``: jitted
        functions shared by every runner and hook of this task and of every task with the
        same signature (a resumed run, a sweep member, a test), so each distinct program is
        traced and compiled once per process (:mod:`jaxdarts.jit_cache`). ``build`` must read
        from the task only what the signature covers (the config, shapes, method, lowering)."""
        return jit_cache.shared((self.signature, key), build)

    def init_state(self, seed: int | None = None) -> SearchState:
        """The state a search starts from: ``alpha``, the supernet's variables and both
        optimisers' states, from ``seed`` (default ``cfg.seed``).

        One program per signature, any seed (a traced argument), compiled without XLA's
        optimisation passes: it runs once per search, and op by op the optimiser states and
        alpha cost ~50 small compiles (2 s at the quick size, 2026-12-02). The key is made
        outside it, from the Python ``seed`` as ``jax.random.key`` takes it (any integer)."""
        key = jax.random.key(self.cfg.seed if seed is None else seed)
        return self.memo("init_state", lambda: jit_cache.compile_once(self._init_state,
                                                                     kernels.FAST_COMPILE_OPTIONS))(key)

    def _init_state(self, key) -> SearchState:
        k_alpha, k_params, k_rng = jax.random.split(key, 3)
        if self.method.init_alpha is None:
            alpha = supernet_lib.init_alpha(self.space, k_alpha, self.spec.alpha_init_scale)
        else:
            alpha = self.method.init_alpha(self.space, k_alpha, self.spec.alpha_init_scale, self.method_config)
        x = jnp.zeros((2,) + self.train_stream.images.shape[1:], jnp.float32)
        # train=True so that training-only modules (the auxiliary head) get parameters.
        # A method with its own weights: the supernet sees them (their values do not change the init).
        own = self.method.weights is not None
        k = k_params  # one key for every stream the init draws from
        variables = self.model.init({"params": k, "noise": k, "dropout": k}, x,
                                    self.mixing_weights(alpha, k) if own else alpha, train=True, normalized=own)
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
        f = self.spec.data.flip
        return self.ds_info.flip if f == "auto" else f == "on"

    def preprocess(self, key, batch, train: bool, cutout_prob=1.0, drop_prob=0.0):
        """Normalised float batch; with ``train``, the training transform (crop, flip,
        cutout with probability ``cutout_prob``). The result carries the keys of its noise
        and drop-path masks (``rng``) and its drop-path probability (``drop_prob``)."""
        d = self.spec.data
        if train and d.augment:
            x = data_lib.augment(key, batch["image"], self.ds_info.mean, self.ds_info.std, pad=d.crop_padding,
                                 flip=self.flip, cutout=d.cutout, cutout_prob=cutout_prob, crop_fill=d.crop_fill)
        else:
            x = data_lib.normalize(batch["image"], self.ds_info.mean, self.ds_info.std)
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
        rng = batch.get("rng")
        if not normalized and self.method.weights is not None:  # the method's parametrisation
            key = jax.random.fold_in(jax.random.wrap_key_data(rng), 2) if rng is not None else jax.random.key(0)
            alpha, normalized = self.mixing_weights(alpha, key, batch.get("sched")), True
        fwd = self.forward(train, normalized, static_dp)
        if rng is not None and self.has_noise_op:
            rng = fresh_noise_key(rng, alpha)
        return fwd(params, batch_stats, alpha, batch["image"], rng, None if static_dp is not None else dp)

    def mixing_weights(self, alpha, key=None, sched=None):
        """The supernet's mixing weights at ``alpha``: the method's ``weights(alpha, ctx)``
        (``ctx.key``: ``key``; None asks for the method's deterministic weights, e.g. a
        distribution's mean), or ``softmax(alpha)`` per edge."""
        if self.method.weights is None:
            return supernet_lib.mixing_weights(self.space, alpha)
        return self.method.weights(alpha, self.context(key=key, sched=sched))

    def op_weights(self, alpha) -> dict:
        """``{cell_type: (E, K)}`` op-mixing weights at ``alpha`` (deterministic: the
        per-epoch summary, reports); a method's per-edge scales are left out."""
        w = self.mixing_weights(alpha)
        return {t: w[t] for t in self.space.cell_types}

    @property
    def has_noise_op(self) -> bool:
        return any(op == "noise" for t in self.space.cell_types for ops in self.space.ops[t] for op in ops)

    def forward(self, train: bool, normalized: bool = False, static_drop_prob: float | None = None):
        """The supernet forward ``(params, batch_stats, alpha, image, rng, drop_prob) ->
        (logits, aux_or_None, new_batch_stats)``, traced once per input signature and shared
        by every caller of the task (and by every task of the same program signature,
        :meth:`memo`): the architecture step, the weight step, an estimator's virtual step,
        Hessian-vector products, evaluation and ``vmap``-ed samples replay one jaxpr instead
        of running the Flax module's Python again (:func:`jaxdarts.jit_cache.trace_once`;
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
                         lambda: jit_cache.trace_once(fwd))

    def train_loss_terms(self, params, batch_stats, alpha, batch, *, normalized=False):
        """The training loss with the auxiliary head: ``(total, (main_loss, logits, new_batch_stats))``."""
        logits, aux, new_bs = self.apply(params, batch_stats, alpha, batch, train=True, normalized=normalized)
        total, loss = with_auxiliary(logits, aux, batch["label"], self.spec.model.aux_weight)
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
        return bool(self.spec.model.get("arch_step_updates_bn", False)) and bool(jax.tree.leaves(state.batch_stats))

    def estimator_options(self, state: SearchState, estimator: str | None = None) -> dict:
        """Options of ``estimator`` (default ``cfg.estimator``) at ``state``: the config's
        ``estimator_options`` (for the configured estimator), and for estimators with a
        virtual step the weight optimiser's current learning rate, momentum, weight decay
        and momentum buffer, so the virtual step is the real one; ``recompute`` from
        ``model.remat``. The one place these are assembled (search step and diagnostics)."""
        name = self.spec.estimator if estimator is None else estimator
        opts = dict(self.spec.estimator_options) if name == self.spec.estimator else {}
        if name in hypergrad.NEEDS_INNER_STEP:
            o = self.spec.optim
            opts.setdefault("inner_lr", self.lr_schedule()(state.step))
            opts.setdefault("momentum", o.momentum)
            opts.setdefault("weight_decay", optim.hyperparam(state.w_opt, "weight_decay"))
            opts.setdefault("momentum_buffer", optim.momentum_buffer(state.w_opt))
        if name in hypergrad.TAKES_RECOMPUTE:
            opts.setdefault("recompute", bool(self.spec.model.remat))
        return opts

    def arch_update(self, state: SearchState, train_batch, val_batch, key=None, sched=None):
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
        if update_bn and self.method.arch_grad is None and self.estimator == "first_order":
            # first order: the gradient's own forward gives the statistics (one forward)
            g, batch_stats = jax.grad(lambda a: self.val_loss_and_stats(state.params, state.batch_stats, a, val_batch),
                                      has_aux=True)(state.alpha)
            g1 = hypergrad.tree_norm(g)
            metrics, tx_args = {"g1_norm": g1, "g2_norm": jnp.zeros_like(g1)}, {}
        else:
            arch_grad = self.method.arch_grad or estimator_arch_grad
            ctx = self.context(key=key, sched=sched, arch_train_batch=train_batch, arch_batch=val_batch)
            out = ArchGrad(*arch_grad(ctx, state))
            g, metrics, tx_args = out.grad, dict(out.metrics), dict(out.tx_args)
            if update_bn and out.batch_stats is not None:  # the plug-in's own forwards gave the statistics
                batch_stats = out.batch_stats
            elif update_bn:  # another forward at the step's starting point (not shared by XLA: +18% program)
                batch_stats = self.val_loss_and_stats(state.params, state.batch_stats, state.alpha, val_batch)[1]
        updates, a_opt = self.arch_tx().update(g, state.a_opt, state.alpha, **tx_args)
        alpha = optax.apply_updates(state.alpha, updates)
        return state.replace(alpha=alpha, a_opt=a_opt, batch_stats=batch_stats), metrics

    def weight_update(self, state: SearchState, train_batch, weights=None):
        """One SGD step on the supernet weights at the method's mixing weights of alpha
        (``softmax(alpha)`` by default), or at the mixing ``weights`` given (a method's
        ``mix``); drop-path as the batch says. Returns
        ``(state, metrics)``."""
        mix, normalized = (state.alpha, False) if weights is None else (weights, True)

        def loss_fn(params):
            return self.train_loss_terms(params, state.batch_stats, mix, train_batch, normalized=normalized)

        (_, (loss, logits, new_bs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, w_opt = self.weight_tx().update(grads, state.w_opt, state.params)
        params = optax.apply_updates(state.params, updates)
        acc = jnp.mean(jnp.argmax(logits, -1) == train_batch["label"])
        return state.replace(params=params, batch_stats=new_bs, w_opt=w_opt), {"train_loss": loss, "train_acc": acc}

    def _arch_or_skip(self, state, tb, vb, key, sched):
        # Weight-only warm-up epochs skip the architecture step's compute. The arch step is
        # traced once (the Python model code is the slow part of tracing) and replayed as a
        # jaxpr inside the cond; the skipped branch needs only its output shapes. The method's
        # own schedule values reach its gradient (the engine's are in the batches already).
        msched = self._method_sched(sched) if self.method.arch_grad is not None else {}
        closed, out_shape = jax.make_jaxpr(self.arch_update, return_shape=True)(state, tb, vb, key, msched)
        arch = lambda s, t, v, k, m: jax.tree.unflatten(jax.tree.structure(out_shape),
                                                        jaxpr_as_fun(closed)(*jax.tree.leaves((s, t, v, k, m))))
        skipped = lambda s, t, v, k, m: (s, _zeros_like_struct(out_shape[1]))
        return jax.lax.cond(sched["arch_update"] > 0, arch, skipped, state, tb, vb, key, msched)

    def _method_sched(self, sched) -> dict:
        """The method's own schedule values of ``sched`` (empty without ``Method.schedule``)."""
        if self.method.schedule is None:
            return {}
        return {k: v for k, v in sched.items() if k not in ENGINE_SCHEDULE}

    def _weight_step(self, state, tb, vb, k, sched):
        if self.method.mix is None:
            return self.weight_update(state, tb)
        ctx = self.context(key=jax.random.fold_in(k, 3), sched=sched, weight_batch=tb, arch_batch=vb)
        out = Mix(*self.method.mix(ctx, state))
        state, w_metrics = self.weight_update(state, tb, weights=out.weights)
        return state, {**w_metrics, **dict(out.metrics)}

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
            state, a_metrics = self._arch_or_skip(state, tb_arch, vb, k_arch, sched)
            state, w_metrics = self._weight_step(state, tb, vb, k, sched)
        elif order == "weights_first":
            state, w_metrics = self._weight_step(state, tb, vb, k, sched)
            state, a_metrics = self._arch_or_skip(state, tb_arch, vb, k_arch, sched)
        elif self._fused_one_level:  # simultaneous one-level: ONE joint gradient (StacNAS, Eq. 5-6)
            state, w_metrics, a_metrics = self._joint_one_level_step(state, tb, sched)
        else:  # simultaneous: both gradients at the same (w, alpha)
            a_state, a_metrics = self._arch_or_skip(state, tb_arch, vb, k_arch, sched)
            state, w_metrics = self._weight_step(state, tb, vb, k, sched)
            state = state.replace(alpha=a_state.alpha, a_opt=a_state.a_opt)
        return state.replace(step=state.step + 1), {**w_metrics, **a_metrics}

    @property
    def _fused_one_level(self) -> bool:
        """Simultaneous order with the ``one_level`` estimator, the method's own gradient and
        no mixing weights: both gradients are of the same training loss at the same point."""
        m = self.method
        return (self.update_order == "simultaneous" and self.spec.estimator == "one_level" and m.arch_grad is None
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
        dp_arch = dp if self.spec.regularization.drop_path_arch else 0.0
        k_t, k_v = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
        tb = self.preprocess(k_t, train_batch, True, cp, dp)
        if self.spec.data.augment_val:
            out = (tb, {**tb, "drop_prob": jnp.asarray(dp_arch, jnp.float32)},
                   self.preprocess(k_v, val_batch, True, cp, dp_arch))
        else:
            out = (tb, self.preprocess(k_t, train_batch, True, 0.0, dp_arch),
                   self.preprocess(k_v, val_batch, False, 0.0, dp_arch))
        if self.method.weights is not None and self.method.schedule is not None:
            msched = self._method_sched(sched)  # a method's weights see its schedule values in every forward
            out = tuple({**b, "sched": msched} for b in out)
        return out

    def step_batches_of(self, state: SearchState, train_batch, val_batch, sched):
        """:meth:`step_batches` of the step that produced ``state`` (its key is the one that
        step used): for analyses of the last step's batches (the Hessian hook)."""
        return self.step_batches(fold_key(state.rng, state.step - 1), train_batch, val_batch, sched)

    def eval_step(self, state: SearchState, batch, alpha=None, normalized=False, key=None):
        """Eval-mode loss/accuracy sums on a uint8 batch (``alpha`` overrides the state's).
        ``key``: the batch's key (a method with its own ``weights`` draws them from it, e.g.
        DrNAS's Dirichlet sample); default ``key(0)``."""
        b = self.preprocess(jax.random.key(0) if key is None else key, batch, False)
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
            section = self.method_config
            if overrides:  # a sweep's values of the method's fields
                section = ml_collections.ConfigDict({**section.to_dict(), **overrides})
            extra = self.method.schedule(section, epoch, cfg.epochs)
            clash = set(extra) & set(out)
            if clash:
                raise ValueError(f"method {self.method.name!r}: schedule values {sorted(clash)} clash with the engine's")
            out.update({k: np.float32(v) for k, v in extra.items()})
        return out

