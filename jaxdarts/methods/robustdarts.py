"""RobustDARTS (Zela et al., 2020): DARTS-ES, DARTS-ADA and R-DARTS on the engine.

The architecture gradient, optimiser and order are DARTS's (the reference runs second
order; ``configs/rdarts.py``). The method adds:

* :func:`early_stop` — the two DARTS-ES rules as one pure function of a record of
  ``(epoch, eigenvalue)`` pairs: ``'code'`` (:func:`code_rule`, an exact replay of the
  reference's ``utils.EVLocalAvg``; default) and ``'paper'`` (:func:`paper_rule`,
  Section 4.2: smoothing over ``k`` epochs around ``i``, return epoch ``i - k``).
* :class:`EarlyStopHook` — on the dominant Hessian eigenvalue logged by the engine's
  :class:`jaxdarts.hooks.HessianHook` (``cfg.hessian_every``; computed as the reference
  does: after epochs ``e % every == 0`` and the last, on the last architecture batch):
  DARTS-ES returns a :class:`~jaxdarts.search.Stop` event carrying the architecture of
  the return epoch; DARTS-ADA (``early_stopping.ada``, Algorithm 1) returns
  :class:`~jaxdarts.search.Rollback` to that epoch plus
  :class:`~jaxdarts.search.SetHyperparam` multiplying the regularisation by
  ``ada_factor`` while it stays ``<= ada_max``, and ignores triggers beyond (the search
  then runs to its budget and returns the last architecture).
* R-DARTS (``sweep.target`` ``'drop_path'`` or ``'weight_decay'``): one search per value of
  ``sweep.grid`` as one ``vmap``-ed :class:`~jaxdarts.search.Sweep` (or one after another,
  ``sweep.mode='sequential'``, same numbers), checkpointed every epoch and resumed by
  re-running the command, then selection of the final architecture by short retraining
  of each candidate on the weight split, scored on the architecture split
  (``select.*``; each score is stored in ``selection.json`` as it is computed, so the
  selection resumes too). ``--max_epochs`` counts search epochs; selection starts once the
  sweep has run all ``cfg.epochs``. Eigenvalue tracking and early stopping act on one
  search: combining them with a sweep is refused by :func:`validate`.

Search regularisation as the reference code applies it (engine fields, set by
``configs/rdarts.py``): drop-path on each mixed-op output (``regularization.drop_path_scope
='edge'``), in the architecture step's losses too (``drop_path_arch``), ramped linearly from
0; cutout only in runs whose maximum drop-path is > 0 (``cutout_needs_drop_path``), at
probability 1 throughout: the paper says the cutout probability "also linearly increases"
and the code assigns a ramped ``cutout_prob`` attribute, but ``utils.Cutout`` reads
``prob``, so the ramp never acts (``regularization.ramp_cutout=True`` gives the paper's
ramp). Architecture batches are drawn from the training images through the training
transform (``data.augment_val``); SVHN is flipped (``data.flip='on'``).

Config section ``cfg.robustdarts``: ``early_stopping`` (mode none/paper/code, window
(the paper rule's k), factor, delta, start_epoch, threshold, ada, ada_factor, ada_max,
ada_target, extra_rollback_epochs), ``sweep`` (target none/drop_path/weight_decay, grid,
mode) and ``select`` (epochs, C, layers).
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np

from jaxdarts import genotype as genotype_lib
from jaxdarts import io as io_lib
from jaxdarts import search
from jaxdarts import retrain as retrain_lib
from jaxdarts.config import ConfigError, check_choice, check_positive


# ----------------------------------------------------------------- criteria
EARLY_STOP_RULES = ("code", "paper")


def early_stop(eigenvalues, rule: str = "code", **params):
    """The DARTS-ES rule ``rule`` on a record of dominant eigenvalues.

    Args:
      eigenvalues: ``[(epoch, value), ...]`` in the order they were computed (0-based
        epochs; DARTS-ADA's rollback truncates the record, as the reference restores its
        tracker from the checkpoint of the epoch it returns to).
      rule: ``'code'`` (:func:`code_rule`, the reference's ``utils.EVLocalAvg``; the
        default, as in ``configs/rdarts.py``) or ``'paper'`` (:func:`paper_rule`,
        Section 4.2).
      **params: the rule's parameters.

    Returns:
      None, or ``(stop_epoch, return_epoch)`` of the first trigger: the epoch whose
      eigenvalue triggers the rule and the epoch whose architecture DARTS-ES returns
      (and DARTS-ADA rolls back to).
    """
    if rule == "code":
        return code_rule(eigenvalues, **params)
    if rule == "paper":
        return paper_rule(eigenvalues, **params)
    raise ValueError(f"early stopping rule {rule!r} is not accepted; accepted: {', '.join(EARLY_STOP_RULES)}")


def code_rule(eigenvalues, window: int = 5, ev_freq: int = 2, total_epochs: int = 50, factor: float = 1.3,
              delta: int = 4, start_epoch: int = 10):
    """The RobustDARTS code's rule: ``utils.EVLocalAvg.update`` then ``early_stop`` after
    each eigenvalue (``train_search.py``; not after the last epoch), replayed on the record.

    Local averages start with the ``ceil(window/2)``-th eigenvalue (the mean of all so far
    until ``window`` exist, then a sliding window of ``window``); each is attributed to
    ``la_epoch = epoch - ev_freq * floor(window/2)``. The rule is tested once
    ``la_epoch - ev_freq * delta >= start_epoch`` and fires when the newest local average
    exceeds ``factor`` times the one ``delta`` averages before; it returns the
    architecture of ``la_epoch - ev_freq * delta``. With the defaults (eigenvalues every 2
    epochs) that is: tested from epoch 22 on, returning 12 epochs back. Where the
    reference would index before the first local average (parameters the reference never
    runs) the test is skipped; a zero previous average gives an infinite ratio, as numpy
    does in the reference."""
    ev, local_avg, start = [], [], 0
    first = int(np.ceil(window / 2))
    offset = int(ev_freq * np.floor(window / 2))
    for epoch, value in eigenvalues:
        ev.append(float(value))
        if epoch >= total_epochs - 1:  # the reference flushes its trailing averages and tests nothing
            continue
        if len(ev) < first:
            la_epoch = -1
        else:
            if len(ev) < window:
                local_avg.append(np.mean(ev))
            else:
                local_avg.append(np.mean(ev[start:start + window]))
                start += 1
            la_epoch = int(epoch - offset)
        back = int(la_epoch - ev_freq * delta)
        if back >= start_epoch and len(local_avg) >= delta + 1:
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.float64(local_avg[-1]) / np.float64(local_avg[-1 - delta])
            if ratio > factor:
                return int(epoch), back
    return None


def paper_rule(eigenvalues, k: int = 5, threshold: float = 0.75):
    """Section 4.2: with ``lam(i)`` the dominant eigenvalue smoothed over the ``k`` epochs
    around epoch ``i`` (the mean of the eigenvalues computed at epochs ``i - k//2 ..
    i + k//2``), stop if ``lam(i - k) / lam(i) < threshold`` and return the architecture
    of epoch ``i - k``.

    ``lam(i)`` is known once epoch ``i + k//2`` has passed; each ``i`` is tested once, at
    the first eigenvalue after its window is complete (``stop_epoch``), oldest first, for
    ``i - k >= 0`` and windows holding at least one eigenvalue (partial windows at the
    start). The paper names no start epoch. With eigenvalues every epoch this stops at
    ``i + k//2`` and returns ``k + k//2`` epochs back."""
    half = k // 2
    tested = k - 1  # the largest i tested so far
    for n, (t, _) in enumerate(eigenvalues):
        seen = eigenvalues[:n + 1]

        def lam(i):
            vals = [float(v) for e, v in seen if i - half <= e <= i + half]
            return np.mean(vals) if vals else None

        for i in range(tested + 1, t - half + 1):
            tested = i
            now, before = lam(i), lam(i - k)
            if now is None or before is None or now <= 0:
                continue
            if before / now < threshold:
                return int(t), int(i - k)
    return None


def rollback_horizon(rule: str, every: int, window: int, delta: int, extra: int = 0) -> int:
    """How far back (epochs) ``rule`` can return: the snapshots DARTS-ADA needs."""
    if rule == "code":
        return every * (window // 2 + delta) + extra
    return window + window // 2 + every + extra


# -------------------------------------------------------------------- hooks
class EarlyStopHook(search.Hook):
    """DARTS-ES and DARTS-ADA on the eigenvalues logged by :class:`jaxdarts.hooks.HessianHook`.

    On a trigger of :func:`early_stop` (rule ``mode``): DARTS-ES stops the search and
    returns the architecture of the trigger's return epoch. DARTS-ADA (``ada``) instead
    rolls back to ``return_epoch - extra_rollback_epochs`` and multiplies the
    regularisation ``ada_target`` by ``ada_factor``, as long as the new value stays
    ``<= ada_max``; a trigger that would exceed ``ada_max`` is ignored (logged with
    ``ignored: true``) and the search runs to its epoch budget, returning the last
    architecture. That is the code's behaviour (``final_iteration``: once at
    ``max_weight_decay`` the stop flag is ignored); Algorithm 1 read literally tests
    ``R <= R_max`` *before* multiplying, which allows one step past ``R_max``.
    Defaults: the paper's C.1 and the published scripts (``ada_factor=10``,
    ``ada_max=3e-2``); ``args.py``'s own defaults are ``mul_factor=3``,
    ``max_weight_decay=243e-4``.
    """

    name = "early_stopping"

    def __init__(self, mode="code", window=5, factor=1.3, delta=4, start_epoch=10, threshold=0.75, ada=False,
                 ada_factor=10.0, ada_max=3e-2, ada_target="weight_decay", every=2, epochs=50,
                 extra_rollback_epochs=0):
        self.mode, self.window, self.factor, self.delta = mode, window, factor, delta
        self.start_epoch, self.threshold = start_epoch, threshold
        self.ada, self.ada_factor, self.ada_max, self.ada_target = ada, ada_factor, ada_max, ada_target
        self.every, self.epochs, self.extra = every, epochs, extra_rollback_epochs
        self.rollback_horizon = rollback_horizon(mode, every, window, delta, extra_rollback_epochs) if ada else 0
        self.eigs: list[tuple[int, float]] = []
        self.genotypes: dict[int, dict] = {}
        self.triggers: list[dict] = []

    @classmethod
    def from_config(cls, cfg):
        e = cfg.robustdarts.early_stopping
        return cls(e.mode, e.window, e.factor, e.delta, e.start_epoch, e.threshold, e.ada, e.ada_factor, e.ada_max,
                   e.ada_target, every=cfg.hessian_every, epochs=cfg.epochs,
                   extra_rollback_epochs=e.extra_rollback_epochs)

    def check(self):
        if self.mode == "paper":
            return early_stop(self.eigs, "paper", k=self.window, threshold=self.threshold)
        return early_stop(self.eigs, "code", window=self.window, ev_freq=self.every, total_epochs=self.epochs,
                          factor=self.factor, delta=self.delta, start_epoch=self.start_epoch)

    def after_epoch(self, runner, epoch, metrics):
        self.genotypes[epoch] = metrics["genotype"]
        if "eigenvalue" not in metrics:
            return None
        self.eigs.append((epoch, metrics["eigenvalue"]))
        hit = self.check()
        if hit is None or hit[0] != epoch:  # a trigger fires once, at its own eigenvalue
            return None
        stop_epoch, return_epoch = hit
        trig = {"stop_epoch": stop_epoch, "return_epoch": return_epoch, "genotype": self.genotypes[return_epoch]}
        metrics["es_trigger"] = {k: v for k, v in trig.items() if k != "genotype"}
        self.triggers.append(trig)
        if not self.ada:
            return [search.Stop(f"early stopping at epoch {stop_epoch}: architecture of epoch {return_epoch}",
                                genotype=trig["genotype"])]
        new = runner.reg[self.ada_target] * self.ada_factor
        if new > self.ada_max * (1 + 1e-9):  # at the maximum: ignore, search to the budget
            trig["ignored"] = metrics["es_trigger"]["ignored"] = True
            return None
        to = max(return_epoch - self.extra, 0)
        metrics["ada"] = {"rollback_to": to, self.ada_target: new}
        self.eigs = [(e, v) for e, v in self.eigs if e <= to]
        self.genotypes = {e: g for e, g in self.genotypes.items() if e <= to}
        return [search.Rollback(to), search.SetHyperparam(self.ada_target, new)]

    def state_dict(self):
        return {"eigs": self.eigs, "genotypes": {str(k): v for k, v in self.genotypes.items()},
                "triggers": self.triggers}

    def load_state_dict(self, d):
        self.eigs = [tuple(x) for x in d.get("eigs", [])]
        self.genotypes = {int(k): v for k, v in d.get("genotypes", {}).items()}
        self.triggers = d.get("triggers", [])


def hooks(cfg) -> list[search.Hook]:
    return [EarlyStopHook.from_config(cfg)] if cfg.robustdarts.early_stopping.mode != "none" else []


# ------------------------------------------------------------------- config
SWEEP_TARGETS = ("none", "drop_path", "weight_decay")


def config() -> ml_collections.ConfigDict:
    """Reference defaults (``src/search/args.py``); early stopping and sweeps off."""
    return ml_collections.ConfigDict(dict(
        early_stopping=dict(mode="none", window=5, factor=1.3, delta=4, start_epoch=10, threshold=0.75,
                            ada=False, ada_factor=10.0, ada_max=3e-2, ada_target="weight_decay",
                            extra_rollback_epochs=0),
        sweep=dict(target="none", grid=(0.0, 0.2, 0.4, 0.6), mode="batched"),
        select=dict(epochs=10, C=16, layers=8)))


def validate(cfg) -> None:
    r = cfg.robustdarts
    e, s = r.early_stopping, r.sweep
    check_choice("robustdarts.early_stopping.mode", e.mode, ("none", "paper", "code"))
    check_choice("robustdarts.early_stopping.ada_target", e.ada_target, search.HYPERPARAMS)
    for f in ("window", "delta", "factor", "ada_factor"):
        check_positive(f"robustdarts.early_stopping.{f}", e[f])
    check_positive("robustdarts.early_stopping.extra_rollback_epochs", e.extra_rollback_epochs, allow_zero=True,
                   integer=True)
    check_positive("robustdarts.early_stopping.ada_max", e.ada_max, allow_zero=True)
    check_choice("robustdarts.sweep.target", s.target, SWEEP_TARGETS)
    check_choice("robustdarts.sweep.mode", s.mode, search.SWEEP_MODES)
    for f in ("epochs", "C", "layers"):
        check_positive(f"robustdarts.select.{f}", r.select[f], integer=True)
    if s.target != "none" and (e.mode != "none" or cfg.hessian_every or cfg.diagnose or cfg.num_seeds > 1):
        raise ConfigError(f"config.robustdarts.sweep.target={s.target!r} (R-DARTS) runs one vmapped sweep without "
                          "per-epoch hooks: set early_stopping.mode='none', hessian_every=0, diagnose=False and "
                          "num_seeds=1, or sweep.target='none'")
    if e.mode != "none" and not cfg.hessian_every:
        raise ConfigError("config.robustdarts.early_stopping.mode needs config.hessian_every > 0 (eigenvalues to watch)")
    if s.target == "none":
        return
    if not len(s.grid):
        raise ConfigError("config.robustdarts.sweep.grid is empty; give the values to search with")
    for v in s.grid:
        bad = not isinstance(v, (int, float)) or v < 0 or (s.target == "drop_path" and v >= 1)
        if bad:
            raise ConfigError(f"config.robustdarts.sweep.grid has {v!r}; {s.target} values must be "
                              f"{'in [0, 1)' if s.target == 'drop_path' else 'non-negative numbers'}")


# ------------------------------------------------------------------ run driver
def driver(cfg, workdir: str, *, log=print, max_epochs: int | None = None, hooks=None) -> dict:
    """One search with DARTS-ES/ADA, or R-DARTS: a sweep, then selection by retraining.
    Writes ``rdarts.json``, ``selection.json`` and ``genotype.json`` (the chosen one)."""
    r = cfg.robustdarts
    if r.sweep.target == "none":
        return search.run_single(cfg, workdir, log=log, max_epochs=max_epochs, hooks=hooks)
    if hooks:
        raise ValueError("R-DARTS sweeps run without hooks")
    task = search.SearchTask.from_config(cfg)
    values = tuple(float(v) for v in r.sweep.grid)
    out = search.run_sweep(task, workdir, search.Sweep(r.sweep.target, values, r.sweep.mode), log=log,
                           max_epochs=max_epochs)
    if not out["finished"]:
        log(f"R-DARTS: {out['epochs_run']}/{cfg.epochs} search epochs done; re-run the command to continue")
        return out
    genotypes = [genotype_lib.Genotype.from_json(g) for g in out["genotypes"]]
    scores = select_by_retraining(task, genotypes, r.select, os.path.join(workdir, "selection.json"), log=log)
    best = int(np.argmax(scores))
    result = {"target": r.sweep.target, "values": list(values), "mode": r.sweep.mode,
              "runs": [{"value": v, "genotype": g.to_dict(), "selection_acc": s}
                       for v, g, s in zip(values, genotypes, scores)],
              "chosen_value": values[best], "genotype": genotypes[best].to_dict(), "epochs_run": out["epochs_run"],
              "finished": True}
    io_lib.write_json(os.path.join(workdir, "rdarts.json"), result)
    io_lib.write_json(os.path.join(workdir, "genotype.json"),
                      {"genotype": genotypes[best].to_dict(), "sweep": out["sweep"], "genotypes": out["genotypes"],
                       "selection_acc": scores})
    log(f"R-DARTS chose {r.sweep.target}={values[best]} (selection accuracies {scores})")
    return result


def select_by_retraining(task: search.SearchTask, genotypes, select, path: str, log=print) -> list[float]:
    """Short retraining of each genotype on the task's weight split, accuracy on its
    architecture split (R-DARTS selection); scores computed earlier are read from ``path``
    and each new one is written there as soon as it exists."""
    saved = io_lib.read_json(path, {})
    names = [g.to_dict() for g in genotypes]
    # candidates changed (another sweep in this workdir): start the selection again
    done = saved.get("scores", []) if saved.get("genotypes", names) == names else []
    cfg = task.cfg
    train_data = (task.train_stream.images, task.train_stream.labels)
    for g in genotypes[len(done):]:
        log(f"R-DARTS selection: retraining candidate {len(done) + 1}/{len(genotypes)}")
        done.append(retrain_lib.train_and_evaluate(
            g, train_data, task.eval_data, ds_info=task.ds_info, C=select.C, layers=select.layers, auxiliary=False,
            epochs=select.epochs, batch_size=cfg.batch_size, drop_path=0.0, cutout=0, pad=cfg.data.crop_padding,
            seed=cfg.seed, lowering=task.lowering, log=log))
        io_lib.write_json(path, {"genotypes": names, "scores": done})
    return done


METHOD = search.Method(name="robustdarts", config=config, validate=validate, hooks=hooks, driver=driver)
