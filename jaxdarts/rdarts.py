"""RobustDARTS (Zela et al., 2020): eigenvalue tracking, DARTS-ES, DARTS-ADA, R-DARTS.

* :class:`HessianHook` — every ``every`` epochs, the dominant (maximum) eigenvalue of
  ``d2 L_val / d alpha^2`` and optionally its top-k eigenvalues by magnitude, on the
  epoch's last architecture batch, BN in training mode, with the architecture
  weight-decay term ``wd/2 ||alpha||^2`` included (it adds ``wd * I``), as the reference
  does. Logged as ``eigenvalue`` / ``eigenvalues``.
* :func:`paper_criterion` / :func:`code_criterion` — the two early-stopping rules.
* :class:`EarlyStopHook` — DARTS-ES (stop, return the architecture of the earlier epoch)
  and DARTS-ADA (Algorithm 1: roll back to that epoch, multiply the regularisation by
  ``ada_factor`` while it stays ``<= ada_max``, continue to the epoch budget).
* :func:`rdarts_search` — R-DARTS: one search per regularisation value, run as one
  ``vmap``-ed search (``mode="batched"``) or one after another (``"sequential"``; same
  result), then selection of the final architecture by short retraining
  (:func:`jaxdarts.train.select_by_retraining`).
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxdarts import analysis
from jaxdarts import genotype as genotype_lib
from jaxdarts import optim
from jaxdarts.search import Hook, SearchTask, _key


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
class HessianHook(Hook):
    """Dominant eigenvalue(s) of the validation-loss Hessian w.r.t. alpha."""

    name = "hessian"

    def __init__(self, every: int = 2, topk: int = 1, method: str = "dense"):
        self.every, self.topk, self.method = every, topk, method
        self._fn = None

    def setup(self, runner):
        task = runner.task
        wd = float(task.cfg.optim.arch_weight_decay)

        def fn(state, vb):
            b = task.preprocess(_key(state.rng, 777), vb, False)
            _, val_loss = task.losses(state.batch_stats)

            def loss(alpha):
                reg = 0.5 * wd * sum(jnp.sum(a ** 2) for a in jax.tree.leaves(alpha))
                return val_loss(state.params, alpha, b) + reg

            # dense: the whole spectrum; lanczos: Ritz values. Both ordered by magnitude.
            k = None if self.method == "dense" else max(self.topk, 2)
            ev = analysis.eigenvalues(loss, state.alpha, k=k, method=self.method, key=_key(state.rng, 778))
            return ev.max(), ev[:self.topk]

        self._fn = jax.jit(fn)

    def after_epoch(self, runner, epoch, metrics):
        if (epoch + 1) % self.every:
            return None
        t = time.time()
        spe = runner.task.steps_per_epoch
        vb = runner.task.val_stream.batch(epoch, spe - 1)  # the epoch's last architecture batch
        top, ev = jax.device_get(self._fn(runner.state, vb))
        metrics["eigenvalue"] = float(top)  # the maximum eigenvalue (RobustDARTS's dominant eigenvalue)
        if self.topk > 1:
            metrics["eigenvalues"] = np.asarray(ev).tolist()  # largest magnitude first
        metrics["hessian_time"] = time.time() - t
        return None


class EarlyStopHook(Hook):
    """DARTS-ES and DARTS-ADA on the eigenvalues logged by :class:`HessianHook`."""

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
        e = cfg.early_stopping
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
        runner.extra.setdefault("es_genotype", trig["genotype"])
        runner.extra.setdefault("es_stop_epoch", stop_epoch)
        runner.extra.setdefault("es_return_epoch", return_epoch)
        if self.ada:
            current = runner.reg[self.ada_target]
            new = current * self.ada_factor
            if new <= self.ada_max:
                metrics["ada"] = {"rollback_to": return_epoch, self.ada_target: new}
                self._rollback_state(return_epoch)
                return ("rollback", return_epoch, self.ada_target, new)
        runner.extra["final_genotype"] = trig["genotype"]
        return ("stop", f"early stopping at epoch {stop_epoch}: architecture of epoch {return_epoch}")

    def _rollback_state(self, to_epoch):
        self.eigs = [(e, v) for e, v in self.eigs if e <= to_epoch]
        self.genotypes = {e: g for e, g in self.genotypes.items() if e <= to_epoch}

    def state_dict(self):
        return {"eigs": self.eigs, "genotypes": {str(k): v for k, v in self.genotypes.items()},
                "triggers": self.triggers}

    def load_state_dict(self, d):
        self.eigs = [tuple(x) for x in d.get("eigs", [])]
        self.genotypes = {int(k): v for k, v in d.get("genotypes", {}).items()}
        self.triggers = d.get("triggers", [])


# ------------------------------------------------------------------- R-DARTS
def _with_value(state, target: str, value: float):
    if target == "weight_decay":
        return state.replace(w_opt=optim.set_hyperparam(state.w_opt, "weight_decay", value))
    return state


def rdarts_search(task: SearchTask, values, target: str = "drop_path", mode: str = "batched", epochs=None):
    """Runs one search per regularisation value, from the same initial state and on the
    same batches. ``target``: ``"drop_path"`` (max probability, ramped) or
    ``"weight_decay"``. ``mode="batched"`` vmaps the search step over the runs (one
    compiled program); ``"sequential"`` runs them one after another. Returns
    ``(final states stacked on axis 0, genotypes)``."""
    if target not in ("drop_path", "weight_decay"):
        raise ValueError(f"unknown R-DARTS target {target!r}; accepted: drop_path, weight_decay")
    if mode not in ("batched", "sequential"):
        raise ValueError(f"unknown R-DARTS mode {mode!r}; accepted: batched, sequential")
    epochs = task.cfg.epochs if epochs is None else epochs
    base = task.init_state()
    states = [_with_value(base, target, v) for v in values]
    spe = task.steps_per_epoch

    def sched_for(epoch, v):
        s = task.schedule_values(epoch, {"drop_path": v} if target == "drop_path" else None)
        return {k: jnp.asarray(x) for k, x in s.items()}

    if mode == "batched":
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
        step = jax.jit(jax.vmap(task.search_step, in_axes=(0, None, None, 0)))
        for epoch in range(epochs):
            sched = jax.tree.map(lambda *xs: jnp.stack(xs), *[sched_for(epoch, v) for v in values])
            vals = task.val_stream.epoch(epoch, 0, spe)
            for tb in task.train_stream.epoch(epoch, 0, spe):
                stacked, _ = step(stacked, tb, next(vals), sched)
    else:
        step = jax.jit(task.search_step)
        out = []
        for v, st in zip(values, states):
            for epoch in range(epochs):
                sched = sched_for(epoch, v)
                vals = task.val_stream.epoch(epoch, 0, spe)
                for tb in task.train_stream.epoch(epoch, 0, spe):
                    st, _ = step(st, tb, next(vals), sched)
            out.append(st)
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *out)
    genotypes = [genotype_lib.derive(task.space, jax.tree.map(lambda a: a[i], stacked.alpha))
                 for i in range(len(values))]
    return stacked, genotypes


def run(cfg, workdir: str, log=print) -> dict:
    """R-DARTS end to end: batched (or sequential) searches over
    ``cfg.rdarts.grid`` of ``cfg.rdarts.target``, then selection by retraining.
    Writes ``WORKDIR/rdarts.json`` and ``genotype.json``."""
    from jaxdarts import train

    task = SearchTask.from_config(cfg)
    r = cfg.rdarts
    os.makedirs(workdir, exist_ok=True)
    t = time.time()
    _, genotypes = rdarts_search(task, list(r.grid), r.target, r.mode)
    search_time = time.time() - t
    scores = train.select_by_retraining(genotypes, cfg, log=log)
    best = int(np.argmax(scores))
    out = {"target": r.target, "values": list(r.grid), "mode": r.mode, "search_time": search_time,
           "runs": [{"value": v, "genotype": g.to_dict(), "selection_acc": s}
                    for v, g, s in zip(r.grid, genotypes, scores)],
           "chosen_value": list(r.grid)[best], "genotype": genotypes[best].to_dict()}
    with open(os.path.join(workdir, "rdarts.json"), "w") as f:
        json.dump(out, f, indent=1)
    with open(os.path.join(workdir, "genotype.json"), "w") as f:
        json.dump({"genotype": genotypes[best].to_dict()}, f, indent=1)
    log(f"R-DARTS chose {r.target}={out['chosen_value']} (selection accuracies {scores})")
    return out
