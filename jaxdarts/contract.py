"""The plug-in contract of the search engine: what a method or a hook sees, and nothing else.

This module imports nothing of the engine (nor of any other ``jaxdarts`` module), so a
method module, a hook, the config and the engine can all depend on it without a circle.

* :class:`SearchState` (the checkpointed pytree) and :func:`fold_key` (the key convention).
* :class:`Method`, what a method supplies; its traced functions receive one
  :class:`Context` and return named results (:class:`ArchGrad`, :class:`Mix`).
* :class:`Hook` and its events (:class:`Stop`, :class:`Rollback`, :class:`SetHyperparam`,
  :class:`Select`), merged by :func:`merge_events`.
* Constants other modules validate against (:data:`UPDATE_ORDERS`,
  :data:`HESSIAN_BATCHES`, :data:`HYPERPARAMS`, :data:`SWEEP_TARGETS`,
  :data:`SWEEP_MODES`) and the one-line config errors (:class:`ConfigError`,
  :func:`check_choice`, :func:`check_positive`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import flax
import jax

__all__ = ["SearchState", "fold_key", "Method", "Context", "ArchGrad", "Mix", "Hook", "Stop", "Rollback",
           "SetHyperparam", "Select", "merge_events", "ConfigError", "check_choice", "check_positive",
           "NonFiniteLossError", "HookConflictError", "UPDATE_ORDERS", "HESSIAN_BATCHES", "HYPERPARAMS",
           "SWEEP_TARGETS", "SWEEP_MODES"]

UPDATE_ORDERS = ("alpha_first", "weights_first", "simultaneous")
HESSIAN_BATCHES = ("search", "clean")
HYPERPARAMS = ("weight_decay", "drop_path")
SWEEP_TARGETS = ("drop_path", "weight_decay", "seed")
SWEEP_MODES = ("batched", "sequential")


# ------------------------------------------------------------------- errors
class ConfigError(ValueError):
    """A bad config field: one line naming the field, the value and the accepted values."""


class NonFiniteLossError(FloatingPointError):
    pass


class HookConflictError(RuntimeError):
    """Two hooks asked for incompatible things in the same epoch."""


def check_choice(field, value, accepted):
    """ConfigError unless ``value`` is one of ``accepted``."""
    if value not in accepted:
        raise ConfigError(f"config.{field}={value!r} is not accepted; accepted: {', '.join(map(str, accepted))}")


def check_positive(field, value, allow_zero=False, integer=False):
    """ConfigError unless ``value`` is a positive (or non-negative) number (an integer if asked)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ConfigError(f"config.{field}={value!r} must be a {'non-negative' if allow_zero else 'positive'} number")
    if integer and isinstance(value, float):
        raise ConfigError(f"config.{field}={value!r} must be an integer")


# -------------------------------------------------------------------- state
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


# ------------------------------------------------------------------ context
@dataclasses.dataclass(frozen=True)
class Context:
    """What a method's traced function sees (built by the engine; fields a call has no use
    for are None).

    Attributes:
      task: the :class:`jaxdarts.task.SearchTask` (space, losses ``task.losses``, forward
        ``task.apply``, ``task.estimator``, ``task.estimator_options(state)``, data sizes).
      config: the method's own config section ``cfg.<name>`` (None for a method without
        one). A method reads its fields here, never from the whole config.
      key: a PRNG key for this call.
      sched: the epoch's schedule values (traced scalars: the engine's ``drop_prob``,
        ``cutout_prob``, ``arch_update`` and the method's own from ``Method.schedule``).
      weight_batch: the weight step's preprocessed batch.
      arch_train_batch: the architecture step's training batch (a second-order estimator's
        virtual step).
      arch_batch: the architecture (validation) batch.
    """

    task: Any = None
    config: Any = None
    key: jax.Array | None = None
    sched: Mapping[str, Any] | None = None
    weight_batch: Any = None
    arch_train_batch: Any = None
    arch_batch: Any = None

    @property
    def space(self):
        return self.task.space

    def replace(self, **kw) -> "Context":
        return dataclasses.replace(self, **kw)


class ArchGrad(NamedTuple):
    """The result of ``Method.arch_grad``.

    Attributes:
      grad: the gradient w.r.t. alpha (same tree).
      metrics: per-step scalars logged as epoch means (e.g. ``g1_norm``).
      tx_args: extra keyword arguments of the architecture optimiser's ``update`` (VAdam's
        squared gradients, a key).
      batch_stats: the BatchNorm running statistics after the gradient's own training-mode
        forwards on the architecture batch (``model.arch_step_updates_bn``), or None (the
        engine then adds one forward for them).
    """

    grad: Any
    metrics: Mapping[str, Any] = {}
    tx_args: Mapping[str, Any] = {}
    batch_stats: Any = None


class Mix(NamedTuple):
    """The result of ``Method.mix``: the weight step's mixing weights and per-step metrics."""

    weights: Any
    metrics: Mapping[str, Any] = {}


# ------------------------------------------------------------------- method
@dataclasses.dataclass(frozen=True)
class Method:
    """What a method supplies to the engine (every field has the DARTS default).

    Traced functions (``arch_grad``, ``mix``, ``weights``) receive one :class:`Context`;
    construction-time functions receive the method's config section (``config`` below) or,
    where they shape the whole run (``defaults``, ``validate``, ``hooks``, ``driver``), the
    whole config.

    Attributes:
      name: the ``cfg.method`` value (and the module ``jaxdarts.methods.<name>``).
      config: ``() -> ConfigDict`` of the method's own section ``cfg.<name>``, or None.
      defaults: ``(cfg) -> None`` setting the method's defaults of shared fields (e.g. its
        estimator) when :func:`jaxdarts.config.base` builds a config for it.
      validate: ``(cfg) -> None``; raises :class:`ConfigError` (one line) for a bad field of
        the method's section or a combination it refuses.
      arch_grad: ``(ctx, state) -> ArchGrad``: the architecture gradient at ``state`` from
        ``ctx.arch_train_batch`` / ``ctx.arch_batch`` with ``ctx.key``. None: the estimator
        named in ``cfg.estimator`` (:func:`jaxdarts.task.estimator_arch_grad`).
      arch_tx: ``(ctx) -> optax transformation`` over alpha (``ctx.task`` gives the data
        sizes, e.g. VAdam's dataset size; ``ctx.config`` the section); None: PyTorch Adam
        from ``cfg.optim`` (:func:`jaxdarts.optim.adam`).
      mix: ``(ctx, state) -> Mix``: the mixing weights (``{cell_type: (E, K)}``, used with
        ``normalized=True``) that the weight step sees instead of the method's ``weights``
        (perturbations of MS-DARTS/SDARTS), computed from the state after the architecture
        step of ``alpha_first``, or None. Alpha is not changed by it.
      weights: ``(alpha, ctx) -> mixing weights``: how alpha becomes the supernet's mixing
        weights (``{cell_type: (E, K)}`` rows on the simplex, optionally with
        ``{'edges': {cell_type: (E,)}}``, a per-edge scale of each mixed op's output) in
        every forward of the search: architecture step, weight step, evaluation, Hessian,
        the per-epoch summary. ``ctx.key`` is the forward's (from its batch), or None for the
        method's deterministic weights (the summary's ``alpha_softmax``; a distribution's
        mean); ``ctx.config`` the section; ``ctx.sched`` the method's traced schedule values
        in the step's forwards (and the Hessian's), None elsewhere (evaluation, summary,
        init). None: ``softmax(alpha)`` per edge (inside the supernet).
      init_alpha: ``(space, key, scale, config) -> alpha``: the architecture parameters
        (``scale``: ``cfg.alpha_init_scale``; ``config``: the method's section); a method
        with more parameters than one logit per op (edge-normalisation betas) adds keys.
        None: :func:`jaxdarts.supernet.init_alpha`.
      schedule: ``(config, epoch, epochs) -> {name: float}``: the method's per-epoch
        scalars (a perturbation radius, a bandwidth) from its section ``config`` (with a
        sweep's value of a field in ``sweepable`` already applied), added to ``ctx.sched``
        as traced values (a ramp or a sweep over them never recompiles) and logged.
      sweepable: fields of the method's section a sweep may vary
        (``Sweep('<method>.<field>', values)``); each must reach the step only through
        ``schedule``.
      update_order: ``'alpha_first'`` (DARTS: architecture step, then the weight step at the
        new alpha), ``'weights_first'`` (NAS-Bench-201's DARTS) or ``'simultaneous'`` (both
        gradients at the same ``(w, alpha)``, then both updates: one-level StacNAS).
      derive: ``(space, alpha) -> Genotype``; None: :func:`jaxdarts.genotype.derive`.
      hooks: ``(cfg) -> list[Hook]`` appended after the engine's (eigenvalue tracking).
      driver: the run driver ``(cfg, workdir, *, log, max_epochs, hooks) -> summary`` (one search,
        stages, a sweep); None: :func:`jaxdarts.search.run_single`.
      report_metrics: ``((title, (metric, ...)), ...)``: the method's per-epoch metrics a
        report plots (:mod:`jaxdarts.report`'s ``method`` section), one figure per title.
    """

    name: str
    config: Callable[[], Any] | None = None
    defaults: Callable[[Any], None] | None = None
    validate: Callable[[Any], None] | None = None
    arch_grad: Callable | None = None
    arch_tx: Callable | None = None
    mix: Callable | None = None
    weights: Callable | None = None
    init_alpha: Callable | None = None
    schedule: Callable | None = None
    sweepable: tuple[str, ...] = ()
    update_order: str = "alpha_first"
    derive: Callable | None = None
    hooks: Callable[[Any], list] | None = None
    driver: Callable | None = None
    report_metrics: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if self.update_order not in UPDATE_ORDERS:
            raise ValueError(f"method {self.name!r}: update_order={self.update_order!r} is not accepted; "
                             f"accepted: {', '.join(UPDATE_ORDERS)}")

    def section(self, cfg):
        """The method's own config section of ``cfg`` (None when it has none)."""
        return cfg.get(self.name) if self.config is not None else None


# ------------------------------------------------------------- hooks/events
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


class Hook:
    """Per-epoch extension point. ``after_epoch(runner, epoch, metrics)`` may add entries to
    ``metrics`` and returns None or a sequence of events (:class:`Stop`,
    :class:`Rollback`, :class:`SetHyperparam`, :class:`Select`). Every event of every hook is
    applied; incompatible events in one epoch raise :class:`HookConflictError`. State a hook
    needs on resume goes into ``state_dict``/``load_state_dict`` (JSON-able).

    A hook reads the runner's public surface: ``runner.task``, ``runner.cfg``,
    ``runner.state``, ``runner.history``, ``runner.log``, ``runner.schedule(epoch)`` (the
    epoch's schedule values) and ``runner.last_batches(epoch)`` (the uint8 batches of the
    epoch's last step; ``task.step_batches_of(state, ...)`` preprocesses them as that step
    did). ``after_finish(runner, summary)`` sees the final summary."""

    name = "hook"
    observer = False
    """True for a hook that only writes what it sees (metrics to a file, TensorBoard) and
    returns no events: the runner keeps no snapshots for it, and a sweep may run it."""
    rollback_horizon = 0
    """How many epochs back a :class:`Rollback` of this hook may go (the runner keeps that
    many snapshots, in memory and as checkpoints, so a rollback works after a resume too)."""

    def setup(self, runner) -> None:
        pass

    def after_epoch(self, runner, epoch: int, metrics: dict) -> Sequence | None:
        return None

    def after_finish(self, runner, summary: dict) -> None:
        pass

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
