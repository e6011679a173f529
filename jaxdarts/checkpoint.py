"""Orbax checkpoints of the search state plus JSON metadata, saved atomically.

Orbax writes each checkpoint into a temporary directory and renames it when complete,
so a kill during a save leaves the previous checkpoint intact (tested). The state is
stored as its Flax state dict and restored into a template of the same structure.

A checkpoint that does not restore (a truncated data file after a disk error or a partial
copy) is moved aside into ``<directory>_unrestorable/`` (kept, not deleted) and the next
older one is tried (:meth:`Checkpointer.restore_latest`); when none restores,
:class:`CheckpointError` names the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import time
import warnings
from typing import Callable

import flax
import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """No checkpoint of a directory restores."""


def _drop_failed_reads() -> None:
    """A failed Orbax restore leaves unawaited read coroutines behind; collect them now,
    quietly, instead of a screen of 'never awaited' warnings at some later point."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        gc.collect()


@contextlib.contextmanager
def _failed_reads_finish_in_their_loop():
    """Orbax runs a restore's reads as tasks of a fresh event loop and closes the loop when
    the first read fails; the other reads still complete on TensorStore's threads and call
    back into the closed loop, each printing a ``RuntimeError: Event loop is closed``
    traceback (hundreds per failed restore, measured 6 of 6 tries with 300 arrays). Inside
    this context a failed restore first lets its remaining reads finish in that loop, then
    closes it. Orbax has no public hook for this: the context swaps its private
    ``asyncio_utils._run_sync_via_new_loop`` for the restore's duration, and does nothing
    where that function does not exist (other Orbax versions)."""
    try:
        from orbax.checkpoint._src import asyncio_utils
        original = asyncio_utils._run_sync_via_new_loop
    except (ImportError, AttributeError):
        yield
        return

    def run(coro):
        loop = asyncio.new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            return loop.run_until_complete(coro)
        finally:
            try:
                for _ in range(100):  # reads started by reads: until none is left
                    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                    if not pending:
                        break
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    asyncio_utils._run_sync_via_new_loop = run
    try:
        yield
    finally:
        asyncio_utils._run_sync_via_new_loop = original


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


class Checkpointer:
    def __init__(self, directory: str, keep: int = 2):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False, create=True),
        )

    def save(self, step: int, state, meta: dict) -> None:
        tree = flax.serialization.to_state_dict(jax.device_get(state))
        for old in self.manager.all_steps():
            if old >= step:  # a rollback (DARTS-ADA) re-runs epochs: newer checkpoints are stale
                self.manager.delete(old)
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                        meta=ocp.args.JsonSave(meta)), force=True)
        self.manager.wait_until_finished()

    def all_steps(self) -> list[int]:
        self.manager.reload()
        return sorted(self.manager.all_steps())

    def latest_step(self):
        steps = self.all_steps()
        return steps[-1] if steps else None

    def read_meta(self, step: int) -> dict:
        with _failed_reads_finish_in_their_loop():
            return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, step: int, template):
        target = flax.serialization.to_state_dict(template)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        with _failed_reads_finish_in_their_loop():
            r = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                   meta=ocp.args.JsonRestore()))
        return flax.serialization.from_state_dict(template, r["state"]), r["meta"]

    def set_aside(self, step: int) -> str:
        """Moves checkpoint ``step`` out of the managed directory; returns where it went."""
        aside = f"{self.directory}_unrestorable"
        os.makedirs(aside, exist_ok=True)
        dest = os.path.join(aside, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(os.path.join(self.directory, str(step)), dest)
        self.manager.reload()
        return dest

    def restore_latest(self, template: Callable[[dict], object] | object, log=print):
        """Restores the newest checkpoint that restores: ``(state, meta)``, or None when
        the directory holds none. ``template`` is a state of the right structure, or a
        function of the checkpoint's metadata returning one (which may raise to refuse the
        checkpoint: that error propagates, the checkpoint is left where it is).

        A checkpoint whose metadata or arrays fail to read is moved aside
        (:meth:`set_aside`) with one log line saying which and why; if all fail,
        :class:`CheckpointError` names the directory."""
        steps = self.all_steps()
        for step in reversed(steps):
            try:
                meta = self.read_meta(step)
            except Exception as e:  # noqa: BLE001 - any read failure means this one is unusable
                error = _first_line(e)
            else:
                tmpl = template(meta) if callable(template) else template
                try:
                    return self.restore(step, tmpl)
                except Exception as e:  # noqa: BLE001
                    error = _first_line(e)
            _drop_failed_reads()  # outside the except blocks: their tracebacks hold the failed reads
            log(f"skipped checkpoint {self.directory}/{step} ({error}); moved to {self.set_aside(step)}")
        if steps:
            raise CheckpointError(f"no checkpoint in {self.directory} restores (epochs {steps} tried, moved to "
                                  f"{self.directory}_unrestorable); use a new --workdir or remove the directory")
        return None
