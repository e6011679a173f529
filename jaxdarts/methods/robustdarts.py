"""RobustDARTS (Zela et al., 2020): DARTS-ES, DARTS-ADA and R-DARTS on the engine.

The architecture gradient, optimiser and order are DARTS's (the reference runs second
order; ``configs/rdarts.py``). The method adds:

* :class:`EarlyStopHook` — on the dominant Hessian eigenvalue logged by the engine's
  :class:`jaxdarts.hooks.HessianHook` (``cfg.hessian_every``): DARTS-ES returns a
  :class:`~jaxdarts.search.Stop` event carrying the architecture of the earlier epoch;
  DARTS-ADA (``early_stopping.ada``, Algorithm 1) returns :class:`~jaxdarts.search.Rollback`
  to that epoch plus :class:`~jaxdarts.search.SetHyperparam` multiplying the regularisation
  by ``ada_factor`` while it stays ``<= ada_max``.
* :func:`paper_criterion` / :func:`code_criterion` — the two early-stopping rules.
* R-DARTS (``sweep.target`` ``'drop_path'`` or ``'weight_decay'``): one search per value of
  ``sweep.grid`` as one ``vmap``-ed :class:`~jaxdarts.search.Sweep` (or one after another,
  ``sweep.mode='sequential'``, same numbers), checkpointed every epoch and resumed by
  re-running the command, then selection of the final architecture by short retraining
  of each candidate on the weight split, scored on the architecture split
  (``select.*``; each score is stored in ``selection.json`` as it is computed, so the
  selection resumes too). ``--max_epochs`` counts search epochs; selection starts once the
  sweep has run all ``cfg.epochs``. Eigenvalue tracking and early stopping act on one
  search: combining them with a sweep is refused by :func:`validate`.

Config section ``cfg.robustdarts``: ``early_stopping`` (mode none/paper/code, window,
factor, delta, start_epoch, threshold, ada, ada_factor, ada_max, ada_target), ``sweep``
(target none/drop_path/weight_decay, grid, mode) and ``select`` (epochs, C, layers).
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np

from jaxdarts import genotype as genotype_lib
from jaxdarts import io as io_lib
from jaxdarts import search
from jaxdarts import train as train_lib
from jaxdarts.config import ConfigError, check_choice, check_positive


# ----------------------------------------------------------------- criteria
def paper_criterion(eigs: list[tuple[int, float]], window: int = 5, threshold: float = 0.75):
    """Section 4.2: with ``avg(i)`` the mean eigenvalue of the ``window`` evaluations up to
    ``i``, stop at the first ``i`` where ``avg(i - window) / avg(i) < threshold``;
    returns ``(stop_epoch, return_epoch)`` (epochs of evaluations ``i`` and ``i-window``)
    or None."""
    vals = [v for _, v in eigs]
    for i in range(2 * window - 1, len(vals)):
        now = np.mean(vals[i - window + 1:i + 1])
        before = np.mean(vals[i - 2 * window + 1:i - window + 1])
        if now > 0 and before / now < threshold:
            return eigs[i][0], eigs[i - window][0]
    return None


def code_criterion(eigs: list[tuple[int, float]], window: int = 5, factor: float = 1.3, delta: int = 4,
                   start_epoch: int = 10):
    """The reference code's rule: moving average over ``window`` evaluations; stop when
    ``avg[-1] / avg[-1 - delta] > factor`` once the current epoch is ``>= start_epoch``;
    return the architecture ``delta`` evaluations back. Checked after every evaluation
    (returns the first trigger)."""
    avgs = []
    for i in range(len(eigs)):
        vals = [v for _, v in eigs[max(0, i - window + 1):i + 1]]
        avgs.append(float(np.mean(vals)))
        if i - delta >= 0 and eigs[i][0] >= start_epoch and avgs[i - delta] > 0 and avgs[i] / avgs[i - delta] > factor:
            return eigs[i][0], eigs[i - delta][0]
    return None


# -------------------------------------------------------------------- hooks
class EarlyStopHook(search.Hook):
    """DARTS-ES and DARTS-ADA on the eigenvalues logged by :class:`jaxdarts.hooks.HessianHook`."""

    name = "early_stopping"

    def __init__(self, mode="code", window=5, factor=1.3, delta=4, start_epoch=10, threshold=0.75, ada=False,
                 ada_factor=10.0, ada_max=3e-2, ada_target="weight_decay"):
        self.mode, self.window, self.factor, self.delta = mode, window, factor, delta
        self.start_epoch, self.threshold = start_epoch, threshold
        self.ada, self.ada_factor, self.ada_max, self.ada_target = ada, ada_factor, ada_max, ada_target
        self.eigs: list[tuple[int, float]] = []
        self.genotypes: dict[int, dict] = {}
        self.triggers: list[dict] = []

    @classmethod
    def from_config(cls, cfg):
        e = cfg.robustdarts.early_stopping
        return cls(e.mode, e.window, e.factor, e.delta, e.start_epoch, e.threshold, e.ada, e.ada_factor, e.ada_max,
                   e.ada_target)

    def check(self):
        if self.mode == "paper":
            return paper_criterion(self.eigs, self.window, self.threshold)
        return code_criterion(self.eigs, self.window, self.factor, self.delta, self.start_epoch)

    def after_epoch(self, runner, epoch, metrics):
        self.genotypes[epoch] = metrics["genotype"]
        if "eigenvalue" not in metrics:
            return None
        self.eigs.append((epoch, metrics["eigenvalue"]))
        hit = self.check()
        if hit is None:
            return None
        stop_epoch, return_epoch = hit
        trig = {"stop_epoch": stop_epoch, "return_epoch": return_epoch, "genotype": self.genotypes[return_epoch]}
        self.triggers.append(trig)
        metrics["es_trigger"] = {k: v for k, v in trig.items() if k != "genotype"}
        if self.ada:
            new = runner.reg[self.ada_target] * self.ada_factor
            if new <= self.ada_max:
                metrics["ada"] = {"rollback_to": return_epoch, self.ada_target: new}
                self.eigs = [(e, v) for e, v in self.eigs if e <= return_epoch]
                self.genotypes = {e: g for e, g in self.genotypes.items() if e <= return_epoch}
                return [search.Rollback(return_epoch), search.SetHyperparam(self.ada_target, new)]
        return [search.Stop(f"early stopping at epoch {stop_epoch}: architecture of epoch {return_epoch}",
                            genotype=trig["genotype"])]

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
                            ada=False, ada_factor=10.0, ada_max=3e-2, ada_target="weight_decay"),
        sweep=dict(target="none", grid=(0.0, 0.2, 0.4, 0.6), mode="batched"),
        select=dict(epochs=10, C=16, layers=8)))


def validate(cfg) -> None:
    r = cfg.robustdarts
    e, s = r.early_stopping, r.sweep
    check_choice("robustdarts.early_stopping.mode", e.mode, ("none", "paper", "code"))
    check_choice("robustdarts.early_stopping.ada_target", e.ada_target, search.HYPERPARAMS)
    for f in ("window", "delta", "factor", "ada_factor"):
        check_positive(f"robustdarts.early_stopping.{f}", e[f])
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


# ------------------------------------------------------------------ program
def program(cfg, workdir: str, *, log=print, max_epochs: int | None = None, hooks=None) -> dict:
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
        done.append(train_lib.train_and_evaluate(
            g, train_data, task.eval_data, ds_info=task.ds_info, C=select.C, layers=select.layers, auxiliary=False,
            epochs=select.epochs, batch_size=cfg.batch_size, drop_path=0.0, cutout=0, seed=cfg.seed,
            lowering=task.lowering, log=log))
        io_lib.write_json(path, {"genotypes": names, "scores": done})
    return done


METHOD = search.Method(name="robustdarts", config=config, validate=validate, hooks=hooks, program=program)
