"""Workdir files written so that a kill never leaves a half-written one.

Every JSON file of a run (``config.json``, ``genotype.json``, ``backend.json``, method
results) goes through :func:`write_json`: written to a temporary file beside the target,
flushed to disk, then renamed over it (``os.replace`` is atomic on POSIX).
``metrics.jsonl`` is appended line by line (:func:`append_jsonl`) and rewritten with
:func:`write_jsonl` when a resume or rollback drops epochs.

With several JAX processes (``jax.distributed``) only process 0 writes these files (every
process computes the same values; Orbax checkpoints coordinate their own writes).
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable

import jax
import numpy as np


def jsonable(x):
    """``x`` with arrays and numpy scalars turned into lists and Python numbers."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.generic, jax.Array, np.ndarray)):
        return np.asarray(x).tolist()
    return x


def _primary() -> bool:
    return jax.process_count() == 1 or jax.process_index() == 0


def _replace(path: str, text: str) -> None:
    if not _primary():
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: str, obj: Any, **dump_kwargs) -> None:
    """Writes ``obj`` (made :func:`jsonable`) to ``path`` atomically."""
    dump_kwargs.setdefault("indent", 1)
    _replace(path, json.dumps(jsonable(obj), **dump_kwargs))


def read_json(path: str, default=None):
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: str, rows: Iterable[dict]) -> None:
    """Replaces ``path`` with one JSON object per line, atomically."""
    _replace(path, "".join(json.dumps(jsonable(r)) + "\n" for r in rows))


def append_jsonl(path: str, row: dict) -> None:
    """Appends one line and syncs it to disk."""
    if not _primary():
        return
    with open(path, "a") as f:
        f.write(json.dumps(jsonable(row)) + "\n")
        f.flush()
        os.fsync(f.fileno())
