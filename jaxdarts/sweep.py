"""Sweeps: several searches that differ in one value, advanced together as one program.

:class:`Sweep` names the target and its values; the functions here hold what is particular
to a sweep, so that :class:`jaxdarts.runner.Runner` only asks: the check of the target
against the task's method and the hooks (:func:`check`), the stacked initial states
(:func:`init_states`), the per-run schedule values (:func:`schedule`) and the summary of
every run (:func:`summary`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxdarts import optim
from jaxdarts.contract import SWEEP_MODES, SWEEP_TARGETS

__all__ = ["Sweep", "check", "init_states", "schedule", "summary", "stack", "index"]


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


def stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def index(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


def check(sweep: Sweep, task, hooks) -> None:
    """ValueError unless ``sweep`` can run on ``task``: no hook that acts on one search, and
    a target the engine or the task's method can sweep."""
    acting = [h for h in hooks or () if not h.observer]
    if acting:
        raise ValueError(f"hooks ({', '.join(h.name for h in acting)}) act on one search; a sweep "
                         f"({sweep.target}) runs without them")
    if sweep.target not in SWEEP_TARGETS:
        name, _, field = sweep.target.partition(".")
        if name != task.method.name or field not in task.method.sweepable:
            ok = [f"{task.method.name}.{f}" for f in task.method.sweepable]
            raise ValueError(f"unknown sweep target {sweep.target!r} for method {task.method.name!r}; accepted: "
                             f"{', '.join(SWEEP_TARGETS + tuple(ok))}")


def init_states(sweep: Sweep, task):
    """The runs' initial states, stacked on a leading axis."""
    if sweep.target == "seed":
        return stack([task.init_state(int(v)) for v in sweep.values])
    base = task.init_state()
    if sweep.target == "weight_decay":
        return stack([base.replace(w_opt=optim.set_hyperparam(base.w_opt, "weight_decay", v)) for v in sweep.values])
    return stack([base] * len(sweep.values))


def schedule(sweep: Sweep, task, epoch: int, reg: dict) -> dict:
    """The schedule values of ``epoch`` for every run, stacked (the swept drop-path maximum or
    method field in each run's)."""
    target = sweep.target
    field = target.partition(".")[2] if target not in SWEEP_TARGETS else None
    per_run = [task.schedule_values(epoch, {**reg, "drop_path": v} if target == "drop_path" else reg,
                                    {field: v} if field else None) for v in sweep.values]
    return {k: np.stack([s[k] for s in per_run]) for k in per_run[0]}


def summary(sweep: Sweep, task, alpha, epochs_run: int, finished: bool) -> dict:
    """``genotype.json`` of a sweep: every run's derived architecture."""
    gs = [task.derive(index(alpha, r)) for r in range(len(sweep.values))]
    return {"sweep": {"target": sweep.target, "values": list(sweep.values)},
            "genotypes": [g.to_dict() for g in gs], "epochs_run": epochs_run, "finished": finished}
