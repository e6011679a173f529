"""Retraining and evaluating discrete architectures, data-parallel from 1 device to many hosts.

:func:`run` trains a :class:`~jaxdarts.networks.NetworkCIFAR`, ``NetworkImageNet`` or
``NetworkNB201`` built from a genotype (:func:`jaxdarts.genotype.resolve`: a published
name, a search workdir, JSON, PyTorch text or an NB201 string) with the recipe of the
config (``configs/retrain_cifar.py``: the DARTS ``train.py`` recipe; ``retrain_imagenet.py``:
``train_imagenet.py``; ``retrain_nb201.py``: NAS-Bench-201's) and evaluates it after every
``eval_every`` epochs (top-1/top-5 on the test split).

Parallelism (:mod:`jaxdarts.parallel`): one jitted step whose batch is sharded over the
``'data'`` axis of a 1-D mesh and whose parameters/optimiser state are replicated (or
FSDP-sharded with ``mesh.fsdp``); the train state is donated. BatchNorm statistics and the
random numbers are those of the global batch, so 1 and 8 devices give the same numbers up to
float reassociation (tested). The global batch is ``batch_size``; with ``lr_scaling='linear'``
the learning rate is ``lr * batch_size / base_batch_size``.

The workdir holds ``config.json``, ``genotype.json`` (what was trained), ``metrics.jsonl``
(one line per epoch: losses, accuracies, learning rate, images/s, ``num_devices``,
``num_hosts``), ``model.json`` (parameters, FLOPs) and Orbax checkpoints after every epoch;
re-running the same command resumes bit-identically (the batch order is a function of
``(seed, epoch)``, the random keys of the step counter).
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdarts import checkpoint as ckpt_lib
from jaxdarts import data as data_lib
from jaxdarts import genotype as genotype_lib
from jaxdarts import io as io_lib
from jaxdarts import networks
from jaxdarts import optim
from jaxdarts import parallel
from jaxdarts import tensorboard as tb_lib
from jaxdarts.losses import with_auxiliary

NETWORKS = ("cifar", "imagenet", "nb201")
SCHEDULES = ("cosine", "cosine_step", "exponential", "constant")


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def build_model(cfg, genotype, num_classes: int):
    m = cfg.model
    if cfg.network == "cifar":
        return networks.NetworkCIFAR(genotype, C=m.C, layers=m.layers, auxiliary=m.auxiliary,
                                     num_classes=num_classes, lowering=cfg.lowering)
    if cfg.network == "imagenet":
        return networks.NetworkImageNet(genotype, C=m.C, layers=m.layers, auxiliary=m.auxiliary,
                                        num_classes=num_classes, lowering=cfg.lowering)
    if cfg.network == "nb201":
        return networks.NetworkNB201(genotype, C=m.C, N=m.N, num_classes=num_classes)
    raise ValueError(f"network={cfg.network!r}; accepted: {', '.join(NETWORKS)}")


def learning_rate_fn(cfg, steps_per_epoch: int):
    """Learning rate of step ``s`` (traced). ``cosine``: per epoch as PyTorch's
    ``CosineAnnealingLR(T_max=epochs)`` stepped once per epoch (DARTS ``train.py``);
    ``cosine_step``: per iteration (NAS-Bench-201); ``exponential``: ``lr * gamma^epoch``
    (DARTS ``train_imagenet.py``, ``StepLR(1, 0.97)``); ``constant``. Optional linear
    warm-up over ``warmup_epochs``. ``lr_scaling='linear'`` scales ``lr`` by
    ``batch_size / base_batch_size``."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"schedule={cfg.schedule!r}; accepted: {', '.join(SCHEDULES)}")
    if cfg.lr_scaling not in ("none", "linear"):
        raise ValueError(f"lr_scaling={cfg.lr_scaling!r}; accepted: none, linear")
    base = cfg.lr * (cfg.batch_size / cfg.base_batch_size if cfg.lr_scaling == "linear" else 1.0)
    E, spe, warm = cfg.epochs, steps_per_epoch, cfg.get("warmup_epochs", 0)

    def lr(step):
        step = jnp.asarray(step, jnp.float32)
        epoch = jnp.floor(step / spe)
        if cfg.schedule == "cosine":
            v = 0.5 * base * (1 + jnp.cos(jnp.pi * epoch / E))
        elif cfg.schedule == "cosine_step":
            v = 0.5 * base * (1 + jnp.cos(jnp.pi * step / (E * spe)))
        elif cfg.schedule == "exponential":
            v = base * cfg.lr_gamma ** epoch
        else:
            v = base * jnp.ones_like(step)
        if warm:
            v = v * jnp.minimum(1.0, (step + 1) / (warm * spe))
        return v

    return lr


def load_data(cfg):
    """``(train, test)`` as ``(images, labels)``; images an array (small datasets) or a
    random-access source (ImageNet: decoded and cropped on the host per batch)."""
    if cfg.dataset == "imagenet2012":
        return data_lib.imagenet_sources(cfg.data_dir, cfg.data.image_size or 224, cfg.seed)
    out = []
    for split in ("train", cfg.data.test_split):
        x, y = data_lib.load(cfg.dataset, split, cfg.data_dir)
        n = cfg.data.max_examples if split == "train" else cfg.data.max_test_examples
        if n:
            x, y = x[:n], y[:n]
        size = cfg.data.image_size
        if size and size != x.shape[1]:
            x = data_lib.pad_to(x, size) if size > x.shape[1] else data_lib.resize(x, size)
        out.append((x, y))
    return tuple(out)


class Trainer:
    """The jitted, sharded programs of one retraining config (usable from a notebook:
    ``t = Trainer(cfg, 'DARTS_V2'); state = t.init_state(); state, m = t.train_step(...)``)."""

    def __init__(self, cfg, genotype, mesh=None, data=None, info: data_lib.DatasetInfo | None = None):
        self.cfg = cfg
        self.genotype = genotype_lib.resolve(genotype)
        self.mesh = mesh if mesh is not None else parallel.make_mesh(cfg.mesh.num_devices)
        self.ds = info if info is not None else data_lib.info(cfg.dataset)
        data_lib.check_crop_fill(cfg.data.get("crop_fill", "raw"))
        self.model = build_model(cfg, self.genotype, self.ds.num_classes)
        (self.train_x, self.train_y), (self.test_x, self.test_y) = data if data is not None else load_data(cfg)
        parallel.check_batch(cfg.batch_size, self.mesh)
        parallel.check_batch(cfg.eval_batch_size, self.mesh, "eval_batch_size")
        self.stream = parallel.HostBatches(self.train_x, self.train_y, cfg.batch_size, cfg.seed,
                                           jax.process_index(), jax.process_count())
        self.steps_per_epoch = cfg.steps_per_epoch or self.stream.steps_per_epoch
        self.lr = learning_rate_fn(cfg, self.steps_per_epoch)
        self.tx = optim.sgd(self.lr, cfg.momentum, cfg.weight_decay, cfg.grad_clip or None, cfg.nesterov)
        self.key = jax.random.key(cfg.seed)
        self._drop_kw = self.cfg.network != "nb201"
        self._build()

    # ---------------------------------------------------------------- programs
    def _input_shape(self, batch):
        return (batch,) + tuple(self.train_x.shape[1:])

    def _preprocess(self, images, key, train: bool):
        d = self.cfg.data
        if train and d.get("color_jitter", 0):  # ImageNet: on [0, 1] pixels, before normalising
            x = data_lib.color_jitter(key, images.astype(jnp.float32) / 255.0, d.color_jitter)
            return (x - jnp.asarray(self.ds.mean)) / jnp.asarray(self.ds.std)
        if train and d.augment:
            return data_lib.augment(key, images, self.ds.mean, self.ds.std, pad=d.pad, flip=self.ds.flip,
                                    cutout=d.cutout, crop_fill=d.get("crop_fill", "raw"))
        return data_lib.normalize(images, self.ds.mean, self.ds.std)

    def _apply(self, variables, x, train, drop=0.0, rng=None, mutable=False):
        kw = {"drop_prob": drop} if self._drop_kw else {}
        rngs = {"dropout": rng} if rng is not None else {}
        return self.model.apply(variables, x, train=train, rngs=rngs, mutable=mutable, **kw)

    def _build(self):
        cfg, mesh = self.cfg, self.mesh
        rep, bsh = parallel.replicated(mesh), parallel.batch_sharding(mesh)
        x0 = jnp.zeros(self._input_shape(2), jnp.float32)

        def init(key):
            v = self.model.init({"params": key, "dropout": key}, x0, train=True,
                                **({"drop_prob": 0.0} if self._drop_kw else {}))
            return TrainState(jnp.zeros((), jnp.int32), v["params"], v.get("batch_stats", {}),
                              self.tx.init(v["params"]))

        abstract = jax.eval_shape(init, self.key)
        if cfg.mesh.fsdp:
            self.state_sharding = TrainState(rep, parallel.fsdp_shardings(mesh, abstract.params),
                                             jax.tree.map(lambda _: rep, abstract.batch_stats),
                                             parallel.fsdp_shardings(mesh, abstract.opt_state))
        else:
            self.state_sharding = jax.tree.map(lambda _: rep, abstract)
        self._init = jax.jit(init, out_shardings=self.state_sharding)

        def step(state, batch, drop):
            k = jax.random.fold_in(self.key, state.step)
            x = self._preprocess(batch["image"], jax.random.fold_in(k, 0), True)

            def loss_fn(p):
                out, mut = self._apply({"params": p, "batch_stats": state.batch_stats}, x, True, drop,
                                       jax.random.fold_in(k, 1), ["batch_stats"])
                logits, aux = out if isinstance(out, tuple) else (out, None)
                loss, main = with_auxiliary(logits, aux, batch["label"], cfg.model.aux_weight, cfg.label_smoothing)
                return loss, (main, logits, mut["batch_stats"])

            (loss, (main, logits, bs)), g = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
            upd, opt = self.tx.update(g, state.opt_state, state.params)
            new = TrainState(state.step + 1, optax.apply_updates(state.params, upd), bs, opt)
            acc = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
            return new, {"loss": main, "total_loss": loss, "acc": acc, "lr": self.lr(state.step)}

        self._step = jax.jit(step, in_shardings=(self.state_sharding, bsh, None),
                             out_shardings=(self.state_sharding, rep), donate_argnums=(0,))

        def evaluate(state, batch):
            x = self._preprocess(batch["image"], None, False)
            logits = self._apply({"params": state.params, "batch_stats": state.batch_stats}, x, False)
            top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
            y, v = batch["label"], batch["valid"]
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
            return {"top1": jnp.sum((top5[:, 0] == y) * v), "top5": jnp.sum(jnp.any(top5 == y[:, None], -1) * v),
                    "loss": jnp.sum(loss * v), "count": jnp.sum(v)}

        self._eval = jax.jit(evaluate, in_shardings=(self.state_sharding, bsh), out_shardings=rep)

    # ---------------------------------------------------------------- API
    def init_state(self) -> TrainState:
        return self._init(self.key)

    def drop_prob(self, epoch: int) -> np.float32:
        """Drop-path probability of ``epoch`` (DARTS: ``drop_path * epoch / epochs``)."""
        return np.float32(self.cfg.model.drop_path * epoch / self.cfg.epochs)

    def train_step(self, state, local_batch, epoch: int):
        return self._step(state, parallel.global_batch(self.mesh, local_batch), self.drop_prob(epoch))

    def evaluate(self, state) -> dict:
        """Top-1 / top-5 accuracy and loss over the whole test split (eval-mode BN)."""
        tot = {"top1": 0.0, "top5": 0.0, "loss": 0.0, "count": 0.0}
        for b in parallel.eval_batches(self.test_x, self.test_y, self.cfg.eval_batch_size, jax.process_index(),
                                       jax.process_count()):
            r = self._eval(state, parallel.global_batch(self.mesh, b))
            tot = {k: tot[k] + float(r[k]) for k in tot}
        n = max(tot["count"], 1.0)
        return {"test_top1": tot["top1"] / n, "test_top5": tot["top5"] / n, "test_loss": tot["loss"] / n,
                "test_examples": int(tot["count"])}

    def model_info(self, state) -> dict:
        """Parameter count (the auxiliary head excluded, as the DARTS papers count) and
        inference FLOPs of one image from XLA's cost analysis (``flops``; ``macs`` =
        flops / 2, the 'multiply-adds' the papers report)."""
        params = jax.device_get(state.params)
        n_all = sum(int(np.size(p)) for p in jax.tree.leaves(params))
        n_aux = sum(int(np.size(p)) for p in jax.tree.leaves(params.get("aux_head", {})))
        variables = {"params": params, "batch_stats": jax.device_get(state.batch_stats)}
        x = jnp.zeros(self._input_shape(1), jnp.float32)
        try:
            ca = jax.jit(lambda v, x: self._apply(v, x, False)).lower(variables, x).compile().cost_analysis()
            ca = ca[0] if isinstance(ca, (list, tuple)) else ca
            flops = float(ca.get("flops", float("nan")))
        except Exception:  # noqa: BLE001 - a backend without cost analysis
            flops = float("nan")
        return {"params": n_all - n_aux, "params_with_aux": n_all, "flops": flops, "macs": flops / 2}


def _write_once(path, obj):
    if jax.process_index() == 0:
        io_lib.write_json(path, obj)


def run(cfg, workdir: str, max_epochs: int | None = None, log=print, mesh=None, data=None) -> dict:
    """Trains (or resumes) the config's genotype in ``workdir``; returns the last metrics."""
    cfg_json = json.loads(cfg.to_json_best_effort())
    saved = io_lib.read_json(os.path.join(workdir, "config.json"))
    if saved is not None and "crop_fill" not in saved.get("data", {}):  # started before the field existed
        saved["data"]["crop_fill"] = "normalized"  # its transform; resumed by --config.data.crop_fill=normalized
    # the mesh may change between invocations (resume on another machine or host count)
    if saved is not None and {**saved, "mesh": None} != {**cfg_json, "mesh": None}:
        diff = sorted(k for k in set(saved) | set(cfg_json) if saved.get(k) != cfg_json.get(k) and k != "mesh")
        raise ValueError(f"workdir {workdir} holds a run of another config (differs in {', '.join(diff)}); "
                         "use a new --workdir")
    trainer = Trainer(cfg, cfg.genotype, mesh=mesh, data=data)  # bad input fails here, before any file
    os.makedirs(workdir, exist_ok=True)
    _write_once(os.path.join(workdir, "config.json"), cfg_json)
    _write_once(os.path.join(workdir, "genotype.json"), {"genotype": trainer.genotype.to_dict(),
                                                          "source": str(cfg.genotype)})
    ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=cfg.get("keep_checkpoints", 2))
    info = parallel.mesh_info(trainer.mesh)
    template = jax.device_get(jax.eval_shape(trainer.init_state))
    restored = ckpt.restore_latest(lambda meta: jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template),
                                   log=log)
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    if restored is None:
        state, epoch = trainer.init_state(), 0
        if jax.process_index() == 0:
            io_lib.write_jsonl(metrics_path, [])
            mi = trainer.model_info(state)
            io_lib.write_json(os.path.join(workdir, "model.json"), {**mi, **info})
            log(f"{cfg.network} network: {mi['params'] / 1e6:.3f} M parameters, {mi['macs'] / 1e6:.1f} M "
                f"multiply-adds per image; {info['num_devices']} device(s) on {info['num_hosts']} host(s)")
    else:
        host_state, meta = restored
        state = jax.device_put(host_state, trainer.state_sharding)
        epoch = meta["epoch"]
        if jax.process_index() == 0:
            io_lib.write_jsonl(metrics_path, [r for r in io_lib.read_jsonl(metrics_path) if r["epoch"] < epoch])
        log(f"resumed from {workdir} at epoch {epoch}")
    spe, end = trainer.steps_per_epoch, cfg.epochs if max_epochs is None else min(cfg.epochs, epoch + max_epochs)
    last, writer, first = {}, None, True
    while epoch < end:
        t0, sums, n = time.time(), {"loss": 0.0, "acc": 0.0}, 0
        for i, b in enumerate(trainer.stream.epoch(epoch, 0, spe)):
            if first:
                log(f"compiling the training step ({cfg.network} network, {info['num_devices']} device(s))")
                tc = time.time()
            state, m = trainer.train_step(state, b, epoch)
            if first:
                jax.block_until_ready(m)
                log(f"training step compiled and ran once in {time.time() - tc:.0f} s")
                first = False
            if cfg.log_every and (i + 1) % cfg.log_every == 0:
                el = time.time() - t0
                eta = el / (i + 1) * (spe - i - 1) + el / (i + 1) * spe * (end - epoch - 1)
                log(f"epoch {epoch + 1}/{cfg.epochs} step {i + 1}/{spe} loss {float(m['loss']):.4f} "
                    f"{(i + 1) / el:.2f} it/s ETA {eta:.0f}s (this invocation)")
            sums = {k: sums[k] + m[k] for k in sums}
            n += 1
        jax.block_until_ready(state)
        secs = time.time() - t0
        row = {"epoch": epoch, "train_loss": float(sums["loss"]) / n, "train_acc": float(sums["acc"]) / n,
               "lr": float(m["lr"]), "drop_prob": float(trainer.drop_prob(epoch)), "seconds": secs,
               "images_per_s": spe * cfg.batch_size / secs, **info}
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            row.update(trainer.evaluate(state))
        epoch += 1
        ckpt.save(epoch, state, {"epoch": epoch})
        if jax.process_index() == 0:
            io_lib.append_jsonl(metrics_path, row)
            if cfg.get("tensorboard", True):
                writer = writer or tb_lib.SummaryWriter(os.path.join(workdir, "tensorboard"))
                writer.scalars(tb_lib.flat_scalars(row), epoch)
                writer.flush()
        log(f"epoch {epoch}/{cfg.epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}"
            + (f" | test top1 {row['test_top1']:.4f} top5 {row['test_top5']:.4f}" if "test_top1" in row else "")
            + f" | lr {row['lr']:.5f} | {row['images_per_s']:.0f} img/s")
        last = row
    return {**last, "epoch": epoch, "finished": epoch >= cfg.epochs}


def evaluate_workdir(workdir: str, log=print, mesh=None, data=None) -> dict:
    """Loads the latest checkpoint of a retraining workdir and evaluates it on the test
    split: top-1/top-5, parameters, FLOPs, images/s of inference."""
    import ml_collections

    cfg = ml_collections.ConfigDict(io_lib.read_json(os.path.join(workdir, "config.json")))
    if cfg is None or not len(cfg):
        raise ValueError(f"{workdir} has no config.json: not a retraining workdir")
    if mesh is None:  # this machine's devices, as many as divide the evaluation batch
        n = max(d for d in range(1, len(jax.devices()) + 1)
                if cfg.eval_batch_size % d == 0 and cfg.batch_size % d == 0
                and (jax.process_count() == 1 or d == len(jax.devices())))
        mesh = parallel.make_mesh(n)
    trainer = Trainer(cfg, genotype_lib.resolve(io_lib.read_json(os.path.join(workdir, "genotype.json"))),
                      mesh=mesh, data=data)
    ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
    template = jax.device_get(jax.eval_shape(trainer.init_state))
    restored = ckpt.restore_latest(lambda meta: jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template),
                                   log=log)
    if restored is None:
        raise ckpt_lib.CheckpointError(f"no checkpoint in {workdir}/checkpoints")
    host_state, meta = restored
    state = jax.device_put(host_state, trainer.state_sharding)
    trainer.evaluate(state)  # compile
    t = time.time()
    out = trainer.evaluate(state)
    secs = time.time() - t
    out.update(trainer.model_info(state), epoch=meta["epoch"], images_per_s=out["test_examples"] / secs,
               **parallel.mesh_info(trainer.mesh))
    return out


def base_config():
    """The DARTS ``train.py`` recipe on CIFAR-10 (``configs/retrain_cifar.py`` default)."""
    import ml_collections

    c = ml_collections.ConfigDict()
    c.genotype = "DARTS_V2"
    c.network = "cifar"
    c.dataset = "cifar10"
    c.data_dir = ml_collections.FieldReference(None, field_type=str)
    c.data = dict(image_size=0, max_examples=0, max_test_examples=0, test_split="test", augment=True, pad=4,
                  crop_fill="raw",  # where the crop's zero padding goes (jaxdarts.data.CROP_FILLS)
                  cutout=16, color_jitter=0.0)
    c.model = dict(C=36, layers=20, N=5, auxiliary=True, aux_weight=0.4, drop_path=0.2)
    c.batch_size = 96
    c.eval_batch_size = 96
    c.base_batch_size = 96
    c.lr_scaling = "none"
    c.lr = 0.025
    c.schedule = "cosine"
    c.lr_gamma = 0.97
    c.warmup_epochs = 0
    c.momentum = 0.9
    c.nesterov = False
    c.weight_decay = 3e-4
    c.grad_clip = 5.0
    c.label_smoothing = 0.0
    c.epochs = 600
    c.steps_per_epoch = 0
    c.eval_every = 1
    c.log_every = 0
    c.seed = 0
    c.lowering = "auto"
    c.mesh = dict(num_devices=0, fsdp=False)
    c.keep_checkpoints = 2
    c.tensorboard = True  # <workdir>/tensorboard event files (jaxdarts.tensorboard)
    return c


def quick(c):
    """Embedded Fashion-MNIST zero-padded to 32x32 (the auxiliary head needs 8x8 maps after
    the second reduction), C=8, 5 cells, 2 epochs x 20 steps of batch 32."""
    c.dataset = "fashion_mnist"
    c.data.image_size, c.data.max_examples, c.data.max_test_examples, c.data.cutout = 32, 2560, 512, 16
    c.model.C, c.model.layers = 8, 5
    c.batch_size = c.eval_batch_size = 32
    c.epochs, c.steps_per_epoch, c.log_every = 2, 20, 10
    return c


def train_and_evaluate(genotype, train_data, test_data, *, ds_info, C=36, layers=20, auxiliary=True,
                       aux_weight=0.4, epochs=600, batch_size=96, lr=0.025, weight_decay=3e-4, drop_path=0.2,
                       cutout=16, pad=4, grad_clip=5.0, seed=0, lowering="auto", log=None) -> float:
    """Trains ``genotype``'s :class:`~jaxdarts.networks.NetworkCIFAR` from scratch on the
    in-memory ``train_data`` with :class:`Trainer` (the DARTS recipe of :func:`base_config`
    with these values, one device) and returns its top-1 accuracy on ``test_data``
    (eval-mode BatchNorm): the short retraining of R-DARTS's selection
    (:mod:`jaxdarts.methods.robustdarts`)."""
    c = base_config()
    c.dataset = ds_info.name
    c.data.update(cutout=cutout, pad=pad)
    c.model.update(C=C, layers=layers, auxiliary=auxiliary, aux_weight=aux_weight, drop_path=drop_path)
    c.batch_size = c.eval_batch_size = c.base_batch_size = batch_size
    c.lr, c.epochs, c.weight_decay, c.grad_clip, c.seed, c.lowering = lr, epochs, weight_decay, grad_clip, seed, lowering
    c.mesh.num_devices = 1
    t = Trainer(c, genotype, data=(tuple(train_data), tuple(test_data)), info=ds_info)
    state = t.init_state()
    for epoch in range(epochs):
        for b in t.stream.epoch(epoch, 0, t.steps_per_epoch):
            state, m = t.train_step(state, b, epoch)
        if log:
            log(f"retrain epoch {epoch + 1}/{epochs} loss {float(m['total_loss']):.4f}")
    return t.evaluate(state)["test_top1"]

