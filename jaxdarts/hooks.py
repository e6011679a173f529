"""Engine hooks any method can use (turned on by shared config fields).

* :class:`HessianHook` (``hessian_every``): the dominant (largest algebraic,
  :func:`dominant_eigenvalues`) eigenvalue of ``d2 L_val / d alpha^2`` and optionally its
  top-k eigenvalues by magnitude, as the RobustDARTS reference computes it
  (``train_search.py``): after the epochs with ``epoch % every == 0`` and after the last
  epoch (0-based epochs), on the epoch's last architecture batch as the search step saw it
  (the training transform where the search applies it, the epoch's drop-path, BN in
  training mode; ``hessian_batch='clean'``: no augmentation, no drop-path), with the
  architecture weight-decay term ``wd/2 ||alpha||^2`` included (it adds ``wd * I``).
  Logged as ``eigenvalue`` (signed), ``eigenvalue_abs`` (its absolute value, what the
  MS-DARTS code reports: ``np.linalg.norm`` of the maximum eigenvalue) and ``eigenvalues``.
* :class:`DiagnoseHook` (``diagnose``): cosine and relative norm of several estimators
  against ``implicit`` on the epoch's first batches, each with the options the search
  would give it (:meth:`jaxdarts.search.SearchTask.estimator_options`).
"""

from __future__ import annotations

import base64
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxdarts import analysis
from jaxdarts import hypergrad
from jaxdarts import cell_diagram
from jaxdarts import tensorboard as tb_lib
from jaxdarts.contract import HESSIAN_BATCHES, Hook, fold_key


def dominant_eigenvalues(loss, alpha, topk: int = 1, method: str = "dense", key=None):
    """``(maximum eigenvalue, top-k eigenvalues by magnitude)`` of ``d2 loss / d alpha^2``.

    The first is the largest *algebraic* eigenvalue (RobustDARTS's dominant eigenvalue),
    not the maximum of the top-k by magnitude: on a spectrum like {-5, -4, 1} it is 1.
    ``dense``: one ``eigh`` of the whole Hessian; ``lanczos``: Ritz values (a separate run
    for the top-k by magnitude when ``topk > 1``)."""
    if method == "dense":
        ev = analysis.eigenvalues(loss, alpha, k=None, method="dense")  # by magnitude
        return ev.max(), ev[:topk]
    top = analysis.eigenvalues(loss, alpha, k=1, method=method, key=key, which="largest")[0]
    if topk == 1:
        return top, top[None]
    return top, analysis.eigenvalues(loss, alpha, k=topk, method=method, key=key)


class HessianHook(Hook):
    """Dominant eigenvalue(s) of the validation-loss Hessian w.r.t. alpha."""

    name = "hessian"

    def __init__(self, every: int = 2, topk: int = 1, method: str = "dense", batch: str = "search"):
        if batch not in HESSIAN_BATCHES:
            raise ValueError(f"hessian_batch={batch!r} is not accepted; accepted: {', '.join(HESSIAN_BATCHES)}")
        self.every, self.topk, self.method, self.batch = every, topk, method, batch

    def due(self, epoch: int, epochs: int) -> bool:
        """Whether the eigenvalue is computed after ``epoch`` (0-based) of ``epochs``."""
        return epoch % self.every == 0 or epoch == epochs - 1

    def _build(self, task):
        wd = float(task.cfg.optim.arch_weight_decay)

        def fn(state, tb, vb, sched):
            if self.batch == "search":  # the last step's architecture batch, as that step preprocessed it
                _, _, b = task.step_batches_of(state, tb, vb, sched)
            else:
                b = task.preprocess(fold_key(state.rng, 777), vb, False)
            _, val_loss = task.losses(state.batch_stats)

            def loss(alpha):
                reg = 0.5 * wd * sum(jnp.sum(a ** 2) for a in jax.tree.leaves(alpha))
                return val_loss(state.params, alpha, b) + reg

            return dominant_eigenvalues(loss, state.alpha, self.topk, self.method, fold_key(state.rng, 778))

        return jax.jit(fn)

    def after_epoch(self, runner, epoch, metrics):
        if not self.due(epoch, runner.cfg.epochs):
            return None
        fn = runner.task.memo(("hessian", self.topk, self.method, self.batch), lambda: self._build(runner.task))
        t = time.time()
        prev = [m["hessian_time"] for m in runner.history if "hessian_time" in m]
        runner.log(f"Hessian eigenvalues w.r.t. alpha after epoch {epoch + 1} ("
                   + (f"~{prev[-1]:.0f} s" if prev else "the first call compiles the Hessian-vector products") + ")")
        tb, vb = runner.last_batches(epoch)
        top, ev = jax.device_get(fn(runner.state, tb, vb, runner.schedule(epoch)))
        metrics["eigenvalue"] = float(top)  # the maximum eigenvalue (RobustDARTS's dominant eigenvalue)
        metrics["eigenvalue_abs"] = abs(float(top))  # |max eigenvalue|: what MS-DARTS's code reports
        if self.topk > 1:
            metrics["eigenvalues"] = np.asarray(ev).tolist()  # largest magnitude first
        metrics["hessian_time"] = time.time() - t
        return None


class DiagnoseHook(Hook):
    """Cosine/relative norm of each estimator vs ``implicit`` on the epoch's first batches."""

    name = "diagnose"

    def __init__(self, estimators=("first_order", "unrolled", "finite_difference", "amended"),
                 reference_options=None):
        self.estimators = tuple(estimators)
        self.reference_options = reference_options or {"maxiter": 20, "damping": 1e-3}

    def _build(self, task):
        def fn(state, tb, vb):
            k = fold_key(state.rng, 12345)
            tb_ = task.preprocess(jax.random.fold_in(k, 0), tb, False)
            vb_ = task.preprocess(jax.random.fold_in(k, 1), vb, False)
            tl, vl = task.losses(state.batch_stats)
            specs = {name: (name, task.estimator_options(state, name)) for name in self.estimators}
            ref_opts = {**task.estimator_options(state, "implicit"), **self.reference_options}
            return hypergrad.compare(specs, tl, vl, state.params, state.alpha, tb_, vb_,
                                     reference=("implicit", ref_opts))

        return jax.jit(fn)

    def after_epoch(self, runner, epoch, metrics):
        fn = runner.task.memo(("diagnose", self.estimators, tuple(sorted(self.reference_options.items()))),
                              lambda: self._build(runner.task))
        out = jax.device_get(fn(runner.state, runner.task.train_stream.batch(epoch, 0),
                                      runner.task.val_stream.batch(epoch, 0)))
        for name, d in out.items():
            metrics[f"cos_{name}_vs_implicit"] = float(d["cosine"])
            metrics[f"relnorm_{name}_vs_implicit"] = float(d["rel_norm"])


class TensorBoardHook(Hook):
    """TensorBoard event files in ``<workdir>/tensorboard`` (:mod:`jaxdarts.tensorboard`):
    every epoch's scalars (of every hook before it), the derived cells as images every
    ``images_every`` epochs (0: never) and the final genotype's (images need matplotlib).
    An observer: a sweep runs it too; only process 0 writes."""

    name = "tensorboard"
    observer = True

    def __init__(self, images_every: int = 0):
        self.images_every = int(images_every)
        self._writer = None

    def _w(self, runner):
        if self._writer is None:
            self._writer = tb_lib.SummaryWriter(os.path.join(runner.workdir, "tensorboard"))
        return self._writer

    def after_epoch(self, runner, epoch, metrics):
        if jax.process_index() != 0:
            return None
        step = epoch + 1
        self._w(runner).scalars(tb_lib.flat_scalars(metrics), step)
        gene = metrics.get("genotype")
        if isinstance(gene, dict) and self.images_every and step % self.images_every == 0:
            self._images(runner, gene, step, final=False)
        self._writer.flush()
        return None

    def after_finish(self, runner, summary):
        if jax.process_index() != 0 or not isinstance(summary.get("genotype"), dict):
            return
        self._images(runner, summary["genotype"], runner.epoch, final=True)
        self._w(runner).flush()

    def _images(self, runner, gene, step, final):
        nb201 = runner.task.space.macro == "nb201"
        try:
            for t in ("normal", "reduce"):
                cells = gene.get(t) or []
                if cells and not isinstance(cells[0][0], (list, tuple)):  # not per-cell
                    png = cell_diagram.cell_diagram([tuple(e) for e in cells], f"{t} cell, epoch {step}", nb201,
                                              gene.get(f"{t}_concat"), engine="matplotlib")
                    self._w(runner).image(f"cells/{'final_' if final else ''}{t}", base64.b64decode(png), step)
        except ImportError:  # no matplotlib: scalars only
            pass
