"""Resume checks: whether a workdir's run can go on with this config, task and backend.

:func:`check_config` refuses a ``config.json`` that differs from the run's config in one line
that names each field and the flags that resume it; :func:`reconcile` makes the task follow a
checkpoint's lowering and edge loop (``'auto'``) or refuses an explicit other one. Used by
:meth:`jaxdarts.runner.Runner.restore_or_init`.
"""

from __future__ import annotations

import json
import os

import jax
from flax import traverse_util

from jaxdarts import config as config_lib
from jaxdarts import io as io_lib

__all__ = ["config_json", "check_config", "reconcile"]

_MISSING = object()


def config_json(cfg) -> dict:
    """The run's ``config.json`` (the config without the fields that only change the log)."""
    d = json.loads(cfg.to_json_best_effort())
    for k in ("log_every", "progress"):
        d.pop(k, None)
    return d


def check_config(workdir: str, cfg) -> None:
    """Refuses to resume ``workdir`` when its ``config.json`` differs from ``cfg``: one line
    naming each differing field with the run's and this config's values and the flags that
    resume it. A field the run's config.json lacks (added to jaxdarts after the run started)
    counts as equal when ``cfg`` holds the value that reproduces the behaviour before it
    existed (:data:`jaxdarts.config.LEGACY_VALUES`)."""
    old = io_lib.read_json(os.path.join(workdir, "config.json"))
    if old is None:
        return
    flat = lambda d: traverse_util.flatten_dict(d, sep=".")  # noqa: E731
    new = flat(config_json(cfg))
    legacy = {k: v for k, v in config_lib.LEGACY_VALUES.items() if k in new}  # another method's: not here
    old = {**legacy, **flat(old)}
    diff = [(k, old.get(k, _MISSING), new.get(k, _MISSING)) for k in sorted(set(old) | set(new))
            if old.get(k, _MISSING) != new.get(k, _MISSING)]
    if diff:
        show = lambda v: "(absent)" if v is _MISSING else json.dumps(v)  # noqa: E731
        fields = "; ".join(f"{k}: run {show(o)}, now {show(n)}" for k, o, n in diff)
        flags = " ".join(f"--config.{k}={o}" for k, o, _ in diff
                         if o is not _MISSING and isinstance(o, (bool, int, float, str)))
        raise ValueError(f"workdir {workdir} holds a run with a different config ({fields}); resume it "
                         f"with the run's values ({flags or 'the config it was started with'}) or use a new "
                         "--workdir")


def reconcile(task, cfg, meta: dict, workdir: str, log=print):
    """The task that resumes the checkpoint of ``meta``: with the checkpoint's lowering and
    edge loop where the config says ``'auto'`` (the parameter and BatchNorm trees depend on
    them; both compute the same function), ValueError where it names another one."""
    saved = meta.get("lowering")
    if saved and saved != task.lowering:
        if cfg.model.depthwise != "auto":
            raise ValueError(f"workdir {workdir} was searched with the {saved!r} lowering; this run asks "
                             f"for config.model.depthwise={cfg.model.depthwise!r}, whose batch statistics "
                             f"do not match: resume with --config.model.depthwise={saved} (or auto)")
        log(f"resuming with the {saved!r} lowering of the checkpoint (this backend, "
            f"{jax.default_backend()}, would pick {task.lowering!r}; same function, other program)")
        task = task.with_lowering(saved)
    # checkpoints from before edge loops existed hold the 'vmap' parameter tree
    saved_loop, asked = meta.get("edge_loop", "vmap"), cfg.model.get("edge_loop", "auto")
    if saved_loop != task.model.edge_loop:
        if asked != "auto":
            raise ValueError(f"workdir {workdir} was searched with edge_loop={saved_loop!r}; this run asks "
                             f"for config.model.edge_loop={asked!r}, whose parameter tree does not match: "
                             f"resume with --config.model.edge_loop={saved_loop} (or auto)")
        log(f"resuming with the checkpoint's edge_loop={saved_loop!r} (same function, other program)")
        task = task.with_edge_loop(saved_loop)
    return task
