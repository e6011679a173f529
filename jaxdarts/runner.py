"""The runner: epochs of a search in a workdir (checkpoints, resume, metrics, hooks, sweeps, mesh).

What is particular to a sweep is in :mod:`jaxdarts.sweep`, the resume checks (config,
lowering, edge loop) in :mod:`jaxdarts.resume`.

:class:`Runner` drives a :class:`jaxdarts.task.SearchTask` (or a :class:`Sweep` of them as
one ``vmap``-ed program) epoch by epoch: deterministic batches, one jitted step,
evaluation, genotype derivation, ``metrics.jsonl`` (one JSON object per epoch), Orbax
checkpoints every epoch, bit-identical resume, and :class:`jaxdarts.contract.Hook`
objects that see each epoch's state, may add metrics and return events. Hooks read its
public surface (``task``, ``cfg``, ``state``, ``history``, ``log``, :meth:`Runner.schedule`,
:meth:`Runner.last_batches`).
"""

from __future__ import annotations

import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxdarts import analysis
from jaxdarts import checkpoint as ckpt_lib
from jaxdarts import genotype as genotype_lib
from jaxdarts import hooks as hooks_lib
from jaxdarts import io as io_lib
from jaxdarts import registry as methods_lib  # finds methods by name; imports none
from jaxdarts import optim
from jaxdarts import parallel
from jaxdarts import resume as resume_lib
from jaxdarts import sweep as sweep_lib
from jaxdarts.contract import HYPERPARAMS, Hook, Method, NonFiniteLossError, SearchState, Select, merge_events
from jaxdarts.sweep import Sweep
from jaxdarts.task import SearchTask

__all__ = ["Runner", "Sweep", "default_hooks", "Progress"]


def default_hooks(cfg, method: Method | None = None) -> list[Hook]:
    """The hooks of a search, in order: Hessian eigenvalues (``hessian_every``), then the
    method's (which may read the eigenvalues), then estimator diagnostics (``diagnose``),
    then the TensorBoard writer (``tensorboard``), which sees every metric of the epoch."""
    if method is None:
        method = methods_lib.get(cfg.method)
    hooks: list[Hook] = []
    if cfg.hessian_every:
        hooks.append(hooks_lib.HessianHook(cfg.hessian_every, cfg.hessian_topk, cfg.hessian_method,
                                           cfg.hessian_batch))
    hooks += list(method.hooks(cfg)) if method.hooks else []
    if cfg.diagnose:
        hooks.append(hooks_lib.DiagnoseHook())
    return hooks + presentation_hooks(cfg)


def presentation_hooks(cfg) -> list[Hook]:
    """Observer hooks that only write what they see (a sweep runs them too): TensorBoard."""
    if not cfg.get("tensorboard", False):
        return []
    return [hooks_lib.TensorBoardHook(cfg.get("tensorboard_images_every", 0))]


# ------------------------------------------------------------------- runner


class Runner:
    """Drives epochs of a :class:`SearchTask` (or of a :class:`Sweep` of them) in ``workdir``."""

    def __init__(self, task: SearchTask, workdir: str, hooks: list[Hook] | None = None, log=print,
                 sweep: Sweep | None = None):
        if sweep is not None:
            sweep_lib.check(sweep, task, hooks)
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
        self.horizon = max([h.rollback_horizon for h in self.hooks], default=0)
        keep = self.cfg.checkpoint_keep if not self.horizon else max(self.cfg.checkpoint_keep, self.horizon + 2)
        self.ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=keep)
        self._compiled = None
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
        return sweep_lib.init_states(self.sweep, self.task)

    def _fns(self):
        """The jitted step and evaluation (built once the lowering is settled)."""
        if self._compiled is None:
            task, donate = self.task, (0,) if self.cfg.donate else ()
            batched = self.sweep is not None and self.sweep.mode == "batched"
            step = jax.vmap(task.search_step, in_axes=(0, None, None, 0)) if batched else task.search_step
            ev = task.eval_step
            if self.sweep is not None:
                def ev(state, batch, alpha=None, normalized=False, key=None):
                    fn = lambda s: task.eval_step(s, batch, alpha, normalized=normalized, key=key)
                    return jax.vmap(fn)(state)
            if self.mesh is not None:  # batches sharded over the mesh, everything else replicated
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
        """The task that resumes the checkpoint (:func:`jaxdarts.resume.reconcile`: its
        lowering and edge loop) and a template state of it."""
        task = resume_lib.reconcile(self.task, self.cfg, meta, self.workdir, self.log)
        if task is not self.task:
            self.task, self._compiled = task, None
        return self.init_state()

    def restore_or_init(self):
        if self.ckpt.all_steps():
            resume_lib.check_config(self.workdir, self.cfg)
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

    def _write_config(self):
        io_lib.write_json(os.path.join(self.workdir, "config.json"), resume_lib.config_json(self.cfg), sort_keys=True)

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

    def schedule(self, epoch: int) -> dict:
        """The schedule values of ``epoch`` as the step receives them (stacked over runs for
        a sweep): the engine's and the method's (:meth:`SearchTask.schedule_values`)."""
        if self.sweep is None:
            return self.task.schedule_values(epoch, self.reg)
        return sweep_lib.schedule(self.sweep, self.task, epoch, self.reg)

    def _train(self, epoch: int, sched, progress):
        """Runs the epoch's steps; returns per-step metrics (arrays over runs for a sweep)."""
        task, cfg = self.task, self.cfg
        step, _ = self._fns()
        spe = task.steps_per_epoch
        pairs = lambda: zip(task.train_stream.epoch(epoch, 0, spe), task.val_stream.epoch(epoch, 0, spe))
        if self.mesh is not None:
            self.state = jax.device_put(self.state, parallel.replicated(self.mesh))
            plain = pairs
            pairs = lambda: ((_to_mesh(self.mesh, tb), _to_mesh(self.mesh, vb)) for tb, vb in plain())  # noqa: E731
        if self.sweep is not None and self.sweep.mode == "sequential":
            states, per_run = [], []
            for r in range(self.num_runs):
                st, s_r, ms = sweep_lib.index(self.state, r), {k: v[r] for k, v in sched.items()}, []
                for tb, vb in pairs():
                    st, m = step(st, tb, vb, s_r)
                    ms.append(m)
                states.append(st)
                per_run.append(jax.device_get(ms))
                progress.update(spe * (r + 1) // self.num_runs, 0.0, 0.0)
            self.state = sweep_lib.stack(states)
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
        sched = self.schedule(epoch)
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
        runs = [self.state.alpha] if self.sweep is None else [sweep_lib.index(self.state.alpha, r)
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
        out["alpha_softmax"] = io_lib.jsonable(task.op_weights(alpha))
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
        # a method that samples its mixing weights (DrNAS) draws a fresh sample per batch, as the
        # references' validation; the same keys every epoch, so evaluations stay comparable
        sampled = task.method.weights is not None and not normalized
        for i in range(nb):
            b = {"image": x[i * bs:(i + 1) * bs], "label": y[i * bs:(i + 1) * bs]}
            if sampled:
                l, c = ev(self.state, b, alpha, normalized=normalized, key=jax.random.fold_in(jax.random.key(0), i))
            else:
                l, c = ev(self.state, b, alpha, normalized=normalized)
            loss, correct = loss + l, correct + c
        n = max(nb * bs, 1)
        loss, correct = np.asarray(loss, np.float64), np.asarray(correct, np.float64)
        return {f"{prefix}_loss": _scalar_or_list(loss / n), f"{prefix}_acc": _scalar_or_list(correct / n)}

    def save(self, epochs_done: int):
        meta = {"epoch": epochs_done, "reg": self.reg, "extra": self.extra, "lowering": self.task.lowering,
                "edge_loop": self.task.model.edge_loop,
                "hooks": {h.name: h.state_dict() for h in self.hooks}}
        self.ckpt.save(epochs_done, self.state, meta)

    def append_metrics(self, metrics: dict):
        self.history.append(metrics)
        io_lib.append_jsonl(self._metrics_path(), metrics)

    def last_batches(self, epoch: int) -> tuple[dict, dict]:
        """The uint8 ``(train, architecture)`` batches of ``epoch``'s last step."""
        spe = self.task.steps_per_epoch
        return self.task.train_stream.batch(epoch, spe - 1), self.task.val_stream.batch(epoch, spe - 1)

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
            if any(not h.observer for h in self.hooks):
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
        """Writes ``genotype.json`` (the final architecture, or every run's for a sweep),
        hands it to the hooks (``after_finish``) and returns it."""
        out = (sweep_lib.summary(self.sweep, self.task, self.state.alpha, self.epoch, self.finished)
               if self.sweep is not None else self._summary())
        io_lib.write_json(os.path.join(self.workdir, "genotype.json"), out)
        for h in self.hooks:
            h.after_finish(self, out)
        if self.sweep is None:
            self.log("final genotype:\n" + genotype_lib.Genotype.from_json(out["genotype"]).render())
        return out

    def _summary(self) -> dict:
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
            out["discretization"] = analysis.discretization_gap(self.evaluate, self.task.space, final)
        return out

def _to_mesh(mesh, batch: dict) -> dict:
    """A global batch (every host holds all of it) -> arrays sharded over the mesh, each
    host contributing its contiguous rows."""
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

