"""Orbax checkpoints of the search state plus JSON metadata, saved atomically.

Orbax writes each checkpoint into a temporary directory and renames it when complete,
so a kill during a save leaves the previous checkpoint intact (tested). The state is
stored as its Flax state dict and restored into a template of the same structure.
"""

from __future__ import annotations

import os

import flax
import jax
import orbax.checkpoint as ocp


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

    def latest_step(self):
        self.manager.reload()
        return self.manager.latest_step()

    def restore(self, step: int, template):
        target = flax.serialization.to_state_dict(template)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        r = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                               meta=ocp.args.JsonRestore()))
        return flax.serialization.from_state_dict(template, r["state"]), r["meta"]

    def restore_latest(self, template):
        step = self.latest_step()
        if step is None:
            return None
        return self.restore(step, template)
