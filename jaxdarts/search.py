"""The search engine's public face and its run drivers (one search, a sweep, a method's own).

The engine is split by role; this module re-exports the public names of each:
:mod:`jaxdarts.contract` (state, keys, :class:`Method`, :class:`Context`, :class:`Hook`,
events, constants: imports nothing of the engine), :mod:`jaxdarts.task` (data streams,
optimisers, losses, the step), :mod:`jaxdarts.runner` (epochs, checkpoints, resume, sweeps,
mesh, hooks; sweeps in :mod:`jaxdarts.sweep`, resume checks in :mod:`jaxdarts.resume`) and the
run drivers here. Three words, three things: a *run driver* runs a config in a workdir
(:func:`run`, :func:`run_single`, :func:`run_sweep`, ``Method.driver``); a *program* is one
jitted, compiled XLA computation, shared through :mod:`jaxdarts.jit_cache`; the *signature*
(:func:`task_signature`) is what keys a task's programs.

The engine knows no method. A method (:class:`Method`, one module per paper under
:mod:`jaxdarts.methods`, found by the name in ``cfg.method``) is data the engine consumes:
its architecture gradient, architecture optimiser, the mixing weights the weight step sees,
the update order, the discretisation, per-epoch hooks and its run driver.

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

from jaxdarts import registry as methods_lib  # finds methods by name; imports none
from jaxdarts.contract import (HESSIAN_BATCHES, HYPERPARAMS, SWEEP_MODES, SWEEP_TARGETS, UPDATE_ORDERS, ArchGrad,
                               ConfigError, Context, Hook, HookConflictError, Method, Mix, NonFiniteLossError,
                               Rollback, SearchState, Select, SetHyperparam, Stop, fold_key, merge_events)
from jaxdarts.losses import cross_entropy
from jaxdarts.runner import Progress, Runner, Sweep, default_hooks, presentation_hooks
from jaxdarts.task import (ENGINE_SCHEDULE, STEP_FIELDS, SearchTask, estimator_arch_grad, fresh_noise_key,
                           task_signature)

__all__ = ["SearchState", "SearchTask", "Method", "Context", "ArchGrad", "Mix", "Runner", "Hook", "Stop", "Rollback",
           "SetHyperparam", "Select", "Sweep", "run", "run_single", "run_sweep", "cross_entropy",
           "NonFiniteLossError", "HookConflictError", "ConfigError", "fold_key", "default_hooks",
           "estimator_arch_grad", "fresh_noise_key", "task_signature", "merge_events", "UPDATE_ORDERS",
           "HESSIAN_BATCHES", "HYPERPARAMS", "SWEEP_TARGETS", "SWEEP_MODES", "STEP_FIELDS", "ENGINE_SCHEDULE",
           "Progress", "presentation_hooks"]


# ------------------------------------------------------------------ run drivers
def run_single(cfg, workdir: str, *, log=print, max_epochs: int | None = None, hooks: list[Hook] | None = None,
               task: SearchTask | None = None) -> dict:
    """One search (the engine hooks and the method's), resumable; with
    ``cfg.num_seeds > 1`` a seed sweep (seeds ``cfg.seed, cfg.seed + 1, ...``) in one
    ``vmap``-ed program instead. ``cfg`` is validated by :meth:`SearchTask.from_config`
    (or was, with the ``task`` given)."""
    task = SearchTask.from_config(cfg) if task is None else task
    if cfg.num_seeds > 1:
        return run_sweep(task, workdir, Sweep("seed", tuple(cfg.seed + i for i in range(cfg.num_seeds))), log=log,
                         max_epochs=max_epochs)
    runner = Runner(task, workdir, default_hooks(cfg, task.method) + list(hooks or []), log=log)
    return runner.run(max_epochs=max_epochs)


def run_sweep(task: SearchTask, workdir: str, sweep: Sweep, *, log=print, max_epochs: int | None = None) -> dict:
    """The searches of ``sweep`` in ``workdir`` (resumable, ``max_epochs`` as for one
    search), with the observer hooks (TensorBoard) of the config."""
    return Runner(task, workdir, presentation_hooks(task.cfg), log=log, sweep=sweep).run(max_epochs=max_epochs)


def run(cfg, workdir: str, hooks: list[Hook] | None = None, log=print, max_epochs: int | None = None) -> dict:
    """Runs (or resumes) the run driver of ``cfg.method`` (``Method.driver``, default
    :func:`run_single`) in ``workdir``; the driver validates ``cfg`` when it builds its task
    (:meth:`SearchTask.from_config`), before it writes anything."""
    driver = methods_lib.get(cfg.method).driver or run_single
    return driver(cfg, workdir, log=log, max_epochs=max_epochs, hooks=hooks)
