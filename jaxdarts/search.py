"""The bilevel search loop: state, jitted step, per-epoch hooks, checkpoints, metrics.

Pieces (each usable on its own, e.g. from a notebook)::

    task = SearchTask.from_config(cfg)           # model, optimisers, losses, data
    state = task.init_state()                    # SearchState pytree
    step = jax.jit(task.search_step)             # arch update, then weight update
    state, m = step(state, train_batch, val_batch, sched)

:func:`run` drives epochs: deterministic batches, one jitted step, evaluation, genotype
derivation, ``metrics.jsonl`` (one JSON object per epoch), Orbax checkpoints every epoch,
resume, and :class:`Hook` objects (Hessian eigenvalues, DARTS-ES/ADA, diagnostics) that
see each epoch's state and may add metrics, stop the run or roll it back.

Conventions: the architecture step uses the estimator named in the config (see
:mod:`jaxdarts.hypergrad`), the losses are ``loss(params, alpha, batch)`` closures over
the BN running statistics; batch-norm statistics in training mode come from the batch
(running averages are updated by the weight step only). Regularisers (drop-path, cutout
ramp, weight decay) apply to the weight step only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.extend.core import jaxpr_as_fun

from jaxdarts import data as data_lib
from jaxdarts import genotype as genotype_lib
from jaxdarts import hypergrad
from jaxdarts import optim
from jaxdarts import spaces as spaces_lib
from jaxdarts import supernet as supernet_lib


class NonFiniteLossError(FloatingPointError):
    pass


@flax.struct.dataclass
class SearchState:
    params: Any
    batch_stats: Any
    alpha: Any
    w_opt: Any
    a_opt: Any
    step: jax.Array
    rng: jax.Array  # raw uint32 key data (checkpointable)


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
    onehot = jax.nn.one_hot(labels, logits.shape[-1])
    if label_smoothing:
        onehot = optax.smooth_labels(onehot, label_smoothing)
    return optax.softmax_cross_entropy(logits, onehot).mean()


def _key(raw, *data):
    k = jax.random.wrap_key_data(raw)
    for d in data:
        k = jax.random.fold_in(k, d)
    return k


@dataclasses.dataclass
class SearchTask:
    """Everything static about a search: model, optimisers, estimator, data streams."""

    cfg: Any
    space: spaces_lib.SearchSpace
    model: supernet_lib.Supernet
    train_stream: data_lib.BatchStream
    val_stream: data_lib.BatchStream
    eval_data: tuple[np.ndarray, np.ndarray]
    ds_info: data_lib.DatasetInfo

    # ------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg) -> "SearchTask":
        from jaxdarts import config as config_lib

        config_lib.validate(cfg)
        from jaxdarts import ops as ops_lib

        ops_lib.set_depthwise_impl(cfg.model.depthwise)
        space = spaces_lib.get(cfg.space)
        ds = data_lib.info(cfg.dataset)
        d = cfg.data
        (tx, ty), (vx, vy) = data_lib.load_search_data(cfg.dataset, d.data_dir, d.max_examples, d.image_size,
                                                       d.train_portion)
        model = supernet_lib.Supernet(space, ds.num_classes, C=cfg.model.C, layers=cfg.model.layers,
                                      auxiliary=cfg.model.auxiliary, remat=cfg.model.remat)
        return cls(cfg, space, model,
                   data_lib.BatchStream(tx, ty, cfg.batch_size, cfg.seed),
                   data_lib.BatchStream(vx, vy, cfg.batch_size, cfg.seed + 7919),
                   (vx, vy), ds)

    @property
    def steps_per_epoch(self) -> int:
        n = self.train_stream.steps_per_epoch
        return min(n, self.cfg.steps_per_epoch) if self.cfg.steps_per_epoch else n

    def lr_schedule(self):
        o = self.cfg.optim
        return optim.cosine_epoch_schedule(o.lr, o.lr_min, self.cfg.epochs, self.steps_per_epoch)

    def weight_tx(self):
        o = self.cfg.optim
        return optim.sgd_injectable(self.lr_schedule(), o.momentum, o.weight_decay, o.grad_clip or None)

    def arch_tx(self):
        o = self.cfg.optim
        return optim.adam(o.arch_lr, o.arch_betas[0], o.arch_betas[1], o.arch_weight_decay)

    def init_state(self, seed: int | None = None) -> SearchState:
        seed = self.cfg.seed if seed is None else seed
        key = jax.random.key(seed)
        k_alpha, k_params, k_rng = jax.random.split(key, 3)
        alpha = supernet_lib.init_alpha(self.space, k_alpha, self.cfg.alpha_init_scale)
        x = jnp.zeros((2,) + self.train_stream.images.shape[1:], jnp.float32)
        # train=True so that training-only modules (the auxiliary head) get parameters
        variables = jax.jit(lambda k: self.model.init({"params": k, "noise": k, "dropout": k}, x, alpha,
                                                       train=True))(k_params)
        params = variables["params"]
        return SearchState(params=params, batch_stats=variables.get("batch_stats", {}), alpha=alpha,
                           w_opt=self.weight_tx().init(params), a_opt=self.arch_tx().init(alpha),
                           step=jnp.zeros((), jnp.int32), rng=jax.random.key_data(k_rng))

    # ------------------------------------------------------------ pure pieces
    def preprocess(self, key, batch, train: bool, cutout_prob=1.0):
        x = data_lib.normalize(batch["image"], self.ds_info.mean, self.ds_info.std)
        d = self.cfg.data
        if train and d.augment:
            x = data_lib.augment(key, x, pad=d.crop_padding, flip=self.ds_info.flip, cutout=d.cutout,
                                 cutout_prob=cutout_prob)
        return {"image": x, "label": batch["label"], "rng": jax.random.key_data(jax.random.fold_in(key, 1))}

    def apply(self, params, batch_stats, alpha, batch, *, train: bool, drop_prob=0.0, normalized=False):
        """Supernet forward; returns ``(logits, aux_logits_or_None, new_batch_stats)``."""
        rngs = {}
        if "rng" in batch:
            k = jax.random.wrap_key_data(batch["rng"])
            rngs = {"noise": jax.random.fold_in(k, 0), "dropout": jax.random.fold_in(k, 1)}
        variables = {"params": params, "batch_stats": batch_stats}
        if train:
            out, mut = self.model.apply(variables, batch["image"], alpha, train=True, drop_prob=drop_prob,
                                        normalized=normalized, rngs=rngs, mutable=["batch_stats"])
            new_bs = mut["batch_stats"]
        else:
            out = self.model.apply(variables, batch["image"], alpha, train=False, normalized=normalized, rngs=rngs)
            new_bs = batch_stats
        logits, aux = out if isinstance(out, tuple) else (out, None)
        return logits, aux, new_bs

    def losses(self, batch_stats, drop_prob=0.0):
        """``(train_loss, val_loss)`` with the ``loss(params, alpha, batch)`` signature.

        The training loss includes the auxiliary head (weight ``aux_weight``) when the
        supernet has one; the validation loss uses the main head only.
        """
        aux_w = self.cfg.model.aux_weight

        def train_loss(params, alpha, batch):
            logits, aux, _ = self.apply(params, batch_stats, alpha, batch, train=True, drop_prob=drop_prob)
            loss = cross_entropy(logits, batch["label"])
            if aux is not None:
                loss = loss + aux_w * cross_entropy(aux, batch["label"])
            return loss

        def val_loss(params, alpha, batch):
            logits, _, _ = self.apply(params, batch_stats, alpha, batch, train=True)
            return cross_entropy(logits, batch["label"])

        return train_loss, val_loss

    def estimator_options(self, state: SearchState) -> dict:
        opts = dict(self.cfg.estimator_options)
        if self.cfg.estimator in hypergrad.NEEDS_INNER_STEP:
            o = self.cfg.optim
            opts.setdefault("inner_lr", self.lr_schedule()(state.step))
            opts.setdefault("momentum", o.momentum)
            opts.setdefault("weight_decay", optim.hyperparam(state.w_opt, "weight_decay"))
            opts.setdefault("momentum_buffer", optim.momentum_buffer(state.w_opt))
        if self.cfg.estimator in hypergrad.TAKES_RECOMPUTE:
            opts.setdefault("recompute", bool(self.cfg.model.remat))
        return opts

    def arch_update(self, state: SearchState, train_batch, val_batch):
        """One architecture step (estimator + Adam). Returns ``(state, aux)``."""
        train_loss, val_loss = self.losses(state.batch_stats)
        est = hypergrad.get(self.cfg.estimator)
        want_aux = self.cfg.estimator != "unrolled" or self.cfg.log_hypergrad_terms
        out = est(train_loss, val_loss, state.params, state.alpha, train_batch, val_batch, has_aux=want_aux,
                  **self.estimator_options(state))
        g, aux = out if want_aux else (out, {})
        metrics = {}
        if aux:
            metrics = {"g1_norm": hypergrad.tree_norm(aux["g1"]), "g2_norm": hypergrad.tree_norm(aux["g2"])}
            if "residual" in aux:
                metrics["solver_residual"] = aux["residual"]
        updates, a_opt = self.arch_tx().update(g, state.a_opt, state.alpha)
        alpha = optax.apply_updates(state.alpha, updates)
        return state.replace(alpha=alpha, a_opt=a_opt), metrics

    def weight_update(self, state: SearchState, train_batch, drop_prob=0.0):
        """One SGD step on the supernet weights. Returns ``(state, metrics)``."""
        aux_w = self.cfg.model.aux_weight

        def loss_fn(params):
            logits, aux, new_bs = self.apply(params, state.batch_stats, state.alpha, train_batch, train=True,
                                             drop_prob=drop_prob)
            loss = cross_entropy(logits, train_batch["label"])
            total = loss if aux is None else loss + aux_w * cross_entropy(aux, train_batch["label"])
            return total, (loss, logits, new_bs)

        (_, (loss, logits, new_bs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, w_opt = self.weight_tx().update(grads, state.w_opt, state.params)
        params = optax.apply_updates(state.params, updates)
        acc = jnp.mean(jnp.argmax(logits, -1) == train_batch["label"])
        return state.replace(params=params, batch_stats=new_bs, w_opt=w_opt), {"train_loss": loss, "train_acc": acc}

    def search_step(self, state: SearchState, train_batch, val_batch, sched):
        """Architecture step then weight step (DARTS order).

        ``train_batch``/``val_batch``: uint8 ``{'image', 'label'}``; ``sched``:
        ``{'drop_prob', 'cutout_prob', 'arch_update'}`` scalars (traced: schedules and
        the arch warm-up never recompile).
        """
        k = _key(state.rng, state.step)
        # same crop/flip for both steps; cutout (a weight-step regulariser) only for the weights
        tb_arch = self.preprocess(jax.random.fold_in(k, 0), train_batch, True, 0.0)
        tb = self.preprocess(jax.random.fold_in(k, 0), train_batch, True, sched["cutout_prob"])
        vb = self.preprocess(jax.random.fold_in(k, 1), val_batch, self.cfg.data.augment_val)
        # Weight-only warm-up epochs skip the architecture step's compute. The arch step is
        # traced once (the Python model code is the slow part of tracing) and replayed as a
        # jaxpr inside the cond; the skipped branch needs only its output shapes.
        closed, out_shape = jax.make_jaxpr(self.arch_update, return_shape=True)(state, tb_arch, vb)
        arch = lambda s, t, v: jax.tree.unflatten(jax.tree.structure(out_shape),
                                                  jaxpr_as_fun(closed)(*jax.tree.leaves((s, t, v))))
        skipped = lambda s, t, v: (s, jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), out_shape[1]))
        state, a_metrics = jax.lax.cond(sched["arch_update"] > 0, arch, skipped, state, tb_arch, vb)
        state, w_metrics = self.weight_update(state, tb, sched["drop_prob"])
        return state.replace(step=state.step + 1), {**w_metrics, **a_metrics}

    def eval_step(self, state: SearchState, batch, alpha=None, normalized=False):
        """Eval-mode loss/accuracy sums on a uint8 batch (``alpha`` overrides the state's)."""
        b = self.preprocess(jax.random.key(0), batch, False)
        a = state.alpha if alpha is None else alpha
        logits, _, _ = self.apply(state.params, state.batch_stats, a, b, train=False, normalized=normalized)
        n = logits.shape[0]
        return cross_entropy(logits, b["label"]) * n, jnp.sum(jnp.argmax(logits, -1) == b["label"])

    def schedule_values(self, epoch: int, reg: dict | None = None) -> dict:
        """Per-epoch drop-path / cutout probabilities (linear ramps as RobustDARTS:
        ``max * epoch / (epochs - 1)``) and whether alpha is updated."""
        cfg = self.cfg
        frac = epoch / max(cfg.epochs - 1, 1)
        dp = (reg or {}).get("drop_path", cfg.regularization.drop_path)
        dp = dp * frac if cfg.regularization.ramp else dp
        cp = cfg.data.cutout_prob * frac if cfg.regularization.ramp_cutout else cfg.data.cutout_prob
        return {"drop_prob": np.float32(dp), "cutout_prob": np.float32(cp),
                "arch_update": np.float32(epoch >= cfg.arch_start_epoch)}


# ---------------------------------------------------------------------- hooks
class Hook:
    """Per-epoch extension point. ``after_epoch`` may add entries to ``metrics`` and
    return ``None``, ``("stop", reason)`` or ``("rollback", epoch, reg_target, reg_value)``
    (restore the snapshot of ``epoch``, then set the regularisation); state it needs on
    resume goes into ``state_dict``/``load_state_dict`` (JSON-able)."""

    name = "hook"

    def setup(self, runner: "Runner") -> None:
        pass

    def after_epoch(self, runner: "Runner", epoch: int, metrics: dict):
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, d: dict) -> None:
        pass


class DiagnoseHook(Hook):
    """Cosine/relative norm of each estimator vs ``implicit`` on the epoch's last batches."""

    name = "diagnose"

    def __init__(self, estimators=("first_order", "unrolled", "finite_difference", "amended"),
                 reference_options=None):
        self.estimators = tuple(estimators)
        self.reference_options = reference_options or {"maxiter": 20, "damping": 1e-3}
        self._fn = None

    def after_epoch(self, runner, epoch, metrics):
        task = runner.task
        if self._fn is None:
            def fn(state, tb, vb):
                k = _key(state.rng, 12345)
                tb_ = task.preprocess(jax.random.fold_in(k, 0), tb, False)
                vb_ = task.preprocess(jax.random.fold_in(k, 1), vb, False)
                tl, vl = task.losses(state.batch_stats)
                specs = {}
                for name in self.estimators:
                    opts = dict(task.cfg.estimator_options) if name == task.cfg.estimator else {}
                    if name in hypergrad.NEEDS_INNER_STEP:
                        opts.setdefault("inner_lr", task.lr_schedule()(state.step))
                    specs[name] = (name, opts)
                return hypergrad.compare(specs, tl, vl, state.params, state.alpha, tb_, vb_,
                                         reference=("implicit", self.reference_options))
            self._fn = jax.jit(fn)
        out = jax.device_get(self._fn(runner.state, runner.task.train_stream.batch(epoch, 0),
                                      runner.task.val_stream.batch(epoch, 0)))
        for name, d in out.items():
            metrics[f"cos_{name}_vs_implicit"] = float(d["cosine"])
            metrics[f"relnorm_{name}_vs_implicit"] = float(d["rel_norm"])


# --------------------------------------------------------------------- runner
def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.generic, jax.Array, np.ndarray)):
        return np.asarray(x).tolist()
    return x


class Runner:
    """Drives epochs for a :class:`SearchTask` in ``workdir``."""

    def __init__(self, task: SearchTask, workdir: str, hooks: list[Hook] | None = None, log=print):
        self.task = task
        self.cfg = task.cfg
        self.workdir = workdir
        self.hooks = list(hooks or [])
        self.log = log
        self.state: SearchState | None = None
        self.epoch = 0  # next epoch to run
        self.reg = {"drop_path": float(self.cfg.regularization.drop_path),
                    "weight_decay": float(self.cfg.optim.weight_decay)}
        self.history: list[dict] = []
        self.snapshots: dict[int, SearchState] = {}  # epoch -> state after that epoch (for rollback)
        self.extra: dict = {}
        os.makedirs(workdir, exist_ok=True)
        from jaxdarts import checkpoint as ckpt_lib
        self.ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=self.cfg.checkpoint_keep)
        self._step = jax.jit(task.search_step, donate_argnums=(0,) if self.cfg.donate else ())
        self._eval = jax.jit(task.eval_step, static_argnames=("normalized",))
        for h in self.hooks:
            h.setup(self)

    # -------------------------------------------------------------- resume
    def restore_or_init(self):
        template = self.task.init_state()
        restored = self.ckpt.restore_latest(template)
        if restored is None:
            self.state = template
            self._write_config()
            self._truncate_metrics(0)
            return False
        self._check_config()
        self.state, meta = restored
        self.epoch = meta["epoch"]
        self.reg = meta["reg"]
        self.extra = meta.get("extra", {})
        for h in self.hooks:
            h.load_state_dict(meta.get("hooks", {}).get(h.name, {}))
        self.history = self._truncate_metrics(self.epoch)
        self.log(f"resumed from {self.ckpt.directory} at epoch {self.epoch}")
        return True

    def _config_json(self):
        d = json.loads(self.cfg.to_json_best_effort())
        for k in ("log_every", "progress"):
            d.pop(k, None)
        return d

    def _write_config(self):
        tmp = os.path.join(self.workdir, "config.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self._config_json(), f, indent=1, sort_keys=True)
        os.replace(tmp, os.path.join(self.workdir, "config.json"))

    def _check_config(self):
        path = os.path.join(self.workdir, "config.json")
        if not os.path.exists(path):
            return
        with open(path) as f:
            old = json.load(f)
        new = self._config_json()
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            raise ValueError(f"workdir {self.workdir} holds a run with a different config (fields {diff}); "
                             "use a new --workdir or the same config to resume")

    def _metrics_path(self):
        return os.path.join(self.workdir, "metrics.jsonl")

    def _truncate_metrics(self, epochs_done: int) -> list[dict]:
        """Keeps metrics lines of epochs < epochs_done (atomically rewritten)."""
        path = self._metrics_path()
        kept = []
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    line = line.strip()
                    if line:
                        d = json.loads(line)
                        if d.get("epoch", 0) < epochs_done:
                            kept.append(d)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            for d in kept:
                f.write(json.dumps(d) + "\n")
        os.replace(tmp, path)
        return kept

    # -------------------------------------------------------------- epochs
    def set_regularization(self, target: str, value: float):
        """Sets ``weight_decay`` (in the optimiser state) or ``drop_path`` (max probability)."""
        self.reg[target] = float(value)
        if target == "weight_decay":
            self.state = self.state.replace(w_opt=optim.set_hyperparam(self.state.w_opt, "weight_decay", value))

    def run_epoch(self, epoch: int) -> dict:
        task, cfg = self.task, self.cfg
        sched = task.schedule_values(epoch, self.reg)
        spe = task.steps_per_epoch
        t0 = time.time()
        sums: dict[str, float] = {}
        count = 0
        pending = []
        progress = Progress(spe, epoch, cfg.epochs, cfg.progress, self.log)
        val_batches = task.val_stream.epoch(epoch, 0, spe)
        for i, tb in enumerate(task.train_stream.epoch(epoch, 0, spe)):
            vb = next(val_batches)
            self.state, m = self._step(self.state, tb, vb, sched)
            pending.append(m)
            if (i + 1) % cfg.log_every == 0 or i + 1 == spe:
                for mm in jax.device_get(pending):
                    for k, v in mm.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    count += 1
                pending = []
                if not math.isfinite(sums.get("train_loss", 0.0)):
                    raise NonFiniteLossError(
                        f"non-finite training loss at epoch {epoch} step {i}; stopped. The last good checkpoint "
                        f"(epoch {epoch - 1}) is kept in {self.ckpt.directory}")
                progress.update(i + 1, sums["train_loss"] / count, sums["train_acc"] / count)
        train_time = time.time() - t0
        metrics = {"epoch": epoch, **{k: v / max(count, 1) for k, v in sums.items()}}
        metrics["lr"] = float(task.lr_schedule()(epoch * spe))
        metrics.update({k: float(v) for k, v in sched.items()})
        metrics["weight_decay"] = self.reg["weight_decay"]
        metrics.update(self.evaluate())
        g = genotype_lib.derive(task.space, self.state.alpha)
        metrics["genotype"] = g.to_dict()
        if not g.per_cell and task.space.macro == "darts":
            metrics["genotype_str"] = g.to_pytorch_str()
        metrics["alpha_softmax"] = _jsonable(supernet_lib.mixing_weights(task.space, self.state.alpha))
        metrics["skip_connect_normal"] = sum(op == "skip_connect" for op, _ in g.all_genes("normal"))
        metrics["train_time"] = train_time
        metrics["steps_per_sec"] = spe / train_time
        progress.done(metrics)
        return metrics

    def evaluate(self, alpha=None, normalized=False, prefix="val") -> dict:
        """Eval-mode loss/accuracy of the supernet on the architecture split."""
        task, cfg = self.task, self.cfg
        x, y = task.eval_data
        bs = cfg.eval_batch_size or cfg.batch_size
        nb = len(x) // bs
        if cfg.eval_batches and cfg.eval_batches > 0:
            nb = min(nb, cfg.eval_batches)
        loss = correct = 0.0
        for i in range(nb):
            b = {"image": x[i * bs:(i + 1) * bs], "label": y[i * bs:(i + 1) * bs]}
            l, c = self._eval(self.state, b, alpha, normalized=normalized)
            loss, correct = loss + l, correct + c
        n = max(nb * bs, 1)
        return {f"{prefix}_loss": float(loss) / n, f"{prefix}_acc": float(correct) / n}

    def save(self, epochs_done: int):
        meta = {"epoch": epochs_done, "reg": self.reg, "extra": self.extra,
                "hooks": {h.name: h.state_dict() for h in self.hooks},
                "data_position": {"epoch": epochs_done, "step": 0}}
        self.ckpt.save(epochs_done, self.state, meta)

    def append_metrics(self, metrics: dict):
        self.history.append(metrics)
        with open(self._metrics_path(), "a") as f:
            f.write(json.dumps(_jsonable(metrics)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rollback(self, to_epoch: int):
        """Restores the in-memory snapshot taken after epoch ``to_epoch`` (bit-identical)
        and rewrites metrics.jsonl to the epochs up to it."""
        if to_epoch not in self.snapshots:
            raise KeyError(f"no snapshot of epoch {to_epoch}; have {sorted(self.snapshots)}")
        self.state = jax.tree.map(jnp.array, self.snapshots[to_epoch])
        self.epoch = to_epoch + 1
        self.history = self._truncate_metrics(self.epoch)
        self.snapshots = {e: s for e, s in self.snapshots.items() if e <= to_epoch}

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
            self.snapshots[epoch] = jax.tree.map(lambda x: jnp.array(x, copy=True), self.state)
            keep = self.cfg.snapshot_window
            self.snapshots = {e: s for e, s in self.snapshots.items() if e > epoch - keep}
            action = None
            for h in self.hooks:
                a = h.after_epoch(self, epoch, metrics)
                action = action or a
            self.append_metrics(metrics)
            self.epoch = epoch + 1
            if action and action[0] == "stop":
                stop_reason = action[1]
                self.extra["stop_reason"] = stop_reason
            elif action and action[0] == "rollback":
                _, to_epoch, target, value = action
                self.rollback(to_epoch)
                self.set_regularization(target, value)
            self.save(self.epoch)
        return self.finish()

    def finish(self) -> dict:
        g = genotype_lib.derive(self.task.space, self.state.alpha)
        chosen = self.extra.get("final_genotype")
        final = genotype_lib.Genotype.from_json(chosen) if chosen else g
        out = {"genotype": final.to_dict(), "last_genotype": g.to_dict(), "epochs_run": self.epoch,
               "stop_reason": self.extra.get("stop_reason")}
        if not final.per_cell and self.task.space.macro == "darts":
            out["genotype_str"] = final.to_pytorch_str()
        if self.cfg.discretization_gap:
            from jaxdarts import analysis
            out["discretization"] = analysis.discretization_gap(self, final)
        tmp = os.path.join(self.workdir, "genotype.json.tmp")
        with open(tmp, "w") as f:
            json.dump(_jsonable(out), f, indent=1)
        os.replace(tmp, os.path.join(self.workdir, "genotype.json"))
        self.log("final genotype:\n" + final.render())
        return out


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
        self.log(f"epoch {m['epoch'] + 1}/{self.epochs}: train loss {m['train_loss']:.4f} acc {m['train_acc']:.3f} | "
                 f"val loss {m['val_loss']:.4f} acc {m['val_acc']:.3f} | lr {m['lr']:.5f} | "
                 f"skip(normal) {m['skip_connect_normal']} | {m['steps_per_sec']:.2f} steps/s")


def default_hooks(cfg) -> list[Hook]:
    """Hooks implied by the config (eigenvalues, early stopping/ADA, diagnostics)."""
    hooks: list[Hook] = []
    if cfg.hessian_every:
        from jaxdarts import rdarts
        hooks.append(rdarts.HessianHook(cfg.hessian_every, cfg.hessian_topk, cfg.hessian_method))
    if cfg.early_stopping.mode != "none":
        from jaxdarts import rdarts
        hooks.append(rdarts.EarlyStopHook.from_config(cfg))
    if cfg.diagnose:
        hooks.append(DiagnoseHook())
    return hooks


def run(cfg, workdir: str, hooks: list[Hook] | None = None, log=print, max_epochs: int | None = None) -> dict:
    """Builds the task from ``cfg`` and runs/resumes the search in ``workdir``."""
    task = SearchTask.from_config(cfg)
    runner = Runner(task, workdir, default_hooks(cfg) + list(hooks or []), log=log)
    return runner.run(max_epochs=max_epochs)
