"""Command-line entry for ``bin/search.py`` (kept here so it is importable and tested)."""

from __future__ import annotations

import os
import sys

from jaxdarts import checkpoint as ckpt_lib
from jaxdarts import compare as compare_lib
from jaxdarts import config as config_lib
from jaxdarts import data as data_lib
from jaxdarts import io as io_lib
from jaxdarts import parallel
from jaxdarts import report
from jaxdarts import retrain
from jaxdarts import search

USAGE = ("usage: search.py --config configs/X.py[:variant] --workdir DIR [--config.FIELD=VALUE ...] "
         "[--max_epochs N] [--compilation_cache DIR|none]")
DEFAULT_CACHE = "~/.cache/jaxdarts/xla"


XLA_GPU_WORKAROUNDS = ("--xla_gpu_enable_triton_gemm=false",)
"""XLA flags the CLI adds unless ``XLA_FLAGS`` already sets them: with Triton GEMM fusion
on, XLA in jaxlib 0.11.2 aborts while compiling the DARTS search step on an H100
(``triton_tiling_propagation.cc:703 Check failed: subdim_size_accumulator == dim_size``,
2026-11-22). Harmless on CPU. Library users on GPU set the flag themselves before JAX
starts (see README)."""


def add_xla_workarounds() -> None:
    """Appends :data:`XLA_GPU_WORKAROUNDS` to ``XLA_FLAGS`` (before the backend starts)."""
    flags = os.environ.get("XLA_FLAGS", "")
    for f in XLA_GPU_WORKAROUNDS:
        if f.split("=")[0] not in flags:
            flags = (flags + " " + f).strip()
    os.environ["XLA_FLAGS"] = flags


def enable_compilation_cache(path: str | None) -> str | None:
    """Turns on JAX's persistent compilation cache at ``path`` (``None``/``"none"``: off),
    so re-running a command (resuming) or a config with the same shapes skips XLA's
    compile of the search step (minutes for the supernet). Leaves a cache directory the
    user configured already untouched. Returns the directory in use."""
    import jax

    current = jax.config.jax_compilation_cache_dir
    if current or not path or path == "none":
        return current or None
    path = os.path.expanduser(path)
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return path


def _fail(msg: str, code: int = 2):
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(code)


def _resolve_config_arg(argv: list[str]) -> list[str]:
    """``--config configs/x.py[:variant]`` pointing at a config shipped with the package
    (:func:`jaxdarts.config.resolve_path`) when no such file is here; exit 2 naming the
    shipped ones when it is neither."""
    out = list(argv)
    for i, a in enumerate(out):
        val = a[len("--config="):] if a.startswith("--config=") else (out[i + 1] if a == "--config" and i + 1 < len(out)
                                                                       else None)
        if val is None:
            continue
        path, sep, variant = val.partition(":")
        try:
            new = config_lib.resolve_path(path) + sep + variant
        except FileNotFoundError as e:
            _fail(str(e))
        if a == "--config":
            out[i + 1] = new
        else:
            out[i] = "--config=" + new
        break
    return out


def _run_flags(argv, usage: str, distributed: bool = False):
    """Parses the flags of bin/search.py and bin/train.py (``--config`` file[:variant] with
    overrides, ``--workdir``, ``--max_epochs``, ``--compilation_cache``, and for training
    ``--distributed``); a bad or missing flag exits 2 with one line."""
    argv = _resolve_config_arg(list(sys.argv if argv is None else argv))
    add_xla_workarounds()
    from absl import flags
    from ml_collections import config_flags

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "config file[:variant]", flag_values=fv, lock_config=True)
    flags.DEFINE_string("workdir", None, "run directory (re-running resumes)", flag_values=fv)
    flags.DEFINE_integer("max_epochs", None, "stop after this many epochs of this invocation", flag_values=fv)
    if distributed:
        flags.DEFINE_bool("distributed", False, "jax.distributed.initialize() first (several hosts; arguments from "
                          "JAXDARTS_COORDINATOR/_NUM_PROCESSES/_PROCESS_ID or cluster auto-detection)", flag_values=fv)
    flags.DEFINE_string("compilation_cache", os.environ.get("JAXDARTS_COMPILATION_CACHE", DEFAULT_CACHE),
                        "persistent XLA compilation cache directory ('none': off)", flag_values=fv)
    try:
        fv(argv)
    except flags.Error as e:
        _fail(str(e).splitlines()[0])
    except (KeyError, AttributeError, ValueError, TypeError) as e:
        _fail(f"bad --config override: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    if fv.config is None:
        _fail("--config is required; " + usage)
    if not fv.workdir:
        _fail("--workdir is required; " + usage)
    return fv


def main(argv=None) -> int:
    fv = _run_flags(argv, USAGE)
    cfg = fv.config
    enable_compilation_cache(fv.compilation_cache)

    try:
        out = search.run(cfg, fv.workdir, max_epochs=fv.max_epochs)
    except (data_lib.DatasetNotPreparedError, search.NonFiniteLossError, ckpt_lib.CheckpointError,
            search.HookConflictError) as e:
        _fail(str(e), 1)
    except ValueError as e:  # e.g. resuming a workdir with another config
        _fail(str(e), 2)
    if not out.get("finished", True):
        print(f"stopped after {out['epochs_run']} of {cfg.epochs} epochs (--max_epochs); re-run the command to "
              f"continue from {fv.workdir}")
        return 0
    print(f"genotype written to {fv.workdir}/genotype.json")
    if "genotype_str" in out:
        print(out["genotype_str"])
    if out.get("stop_reason"):
        print(out["stop_reason"])
    return 0


COMPARE_USAGE = ("usage: compare.py --config configs/compare.py[:variant] --workdir DIR [--config.FIELD=VALUE ...] "
                 "[--max_epochs N] [--compilation_cache DIR|none]")


def compare_main(argv=None) -> int:
    """``bin/compare.py``: every method and the baselines against a ground truth
    (:mod:`jaxdarts.compare`); re-running resumes."""
    fv = _run_flags(argv, COMPARE_USAGE)
    try:
        compare_lib.check(fv.config)
    except (config_lib.ConfigError, FileNotFoundError) as e:
        _fail(str(e))
    enable_compilation_cache(fv.compilation_cache)
    try:
        board = compare_lib.run(fv.config, fv.workdir, max_epochs=fv.max_epochs)
    except (data_lib.DatasetNotPreparedError, search.NonFiniteLossError, ckpt_lib.CheckpointError) as e:
        _fail(str(e), 1)
    except ValueError as e:  # another comparison in the workdir
        _fail(str(e), 2)
    print(compare_lib.markdown(board))
    print(f"leaderboard written to {fv.workdir}/leaderboard.json, .md, .html and .png")
    return 0


TRAIN_USAGE = ("usage: train.py --config configs/retrain_X.py[:variant] --workdir DIR [--config.genotype=SPEC] "
               "[--config.FIELD=VALUE ...] [--max_epochs N] [--distributed] [--compilation_cache DIR|none]")


def train_main(argv=None) -> int:
    """``bin/train.py``: retraining (:func:`jaxdarts.retrain.run`); re-running resumes."""
    fv = _run_flags(argv, TRAIN_USAGE, distributed=True)
    if fv.distributed:
        if not parallel.initialize():  # no JAXDARTS_* settings: JAX's cluster auto-detection
            jax_distributed_autodetect()
    enable_compilation_cache(fv.compilation_cache)
    try:
        out = retrain.run(fv.config, fv.workdir, max_epochs=fv.max_epochs)
    except (data_lib.DatasetNotPreparedError, ckpt_lib.CheckpointError) as e:
        _fail(str(e), 1)
    except ValueError as e:  # a bad genotype, network, schedule, batch size, or another config in the workdir
        _fail(str(e), 2)
    if not out["finished"]:
        print(f"stopped after epoch {out['epoch']} of {fv.config.epochs} (--max_epochs); re-run the command to "
              f"continue from {fv.workdir}")
    elif "test_top1" in out:
        print(f"test top-1 {out['test_top1']:.4f} top-5 {out['test_top5']:.4f}; metrics in {fv.workdir}/metrics.jsonl")
    return 0


def jax_distributed_autodetect() -> None:
    import jax

    if not jax.distributed.is_initialized():
        jax.distributed.initialize()


def eval_main(argv=None) -> int:
    """``bin/eval.py WORKDIR``: top-1/top-5, parameters, FLOPs and images/s of the latest
    checkpoint of a retraining workdir, printed as JSON (and written to ``eval.json``)."""
    import json

    argv = list(sys.argv if argv is None else argv)
    add_xla_workarounds()
    if len(argv) != 2 or argv[1].startswith("-"):
        _fail("usage: eval.py WORKDIR (a bin/train.py workdir)")
    workdir = argv[1]
    if not os.path.exists(os.path.join(workdir, "config.json")):
        _fail(f"{workdir!r} is not a retraining workdir (no config.json); accepted: a bin/train.py --workdir")
    try:
        out = retrain.evaluate_workdir(workdir)
    except (data_lib.DatasetNotPreparedError, ckpt_lib.CheckpointError) as e:
        _fail(str(e), 1)
    io_lib.write_json(os.path.join(workdir, "eval.json"), out)
    print(json.dumps(out, indent=1))
    return 0


def report_main(argv=None) -> int:
    """``bin/report.py WORKDIR [WORKDIR ...] [--out FILE]``: an HTML report of one run or a
    side-by-side comparison (:mod:`jaxdarts.report`)."""
    import argparse

    argv = list(sys.argv if argv is None else argv)
    p = argparse.ArgumentParser(prog="report.py", description=report_main.__doc__.splitlines()[0])
    p.add_argument("workdirs", nargs="+", help="search or retraining workdirs")
    p.add_argument("--out", default=None, help="HTML file (default: WORKDIR/report.html, or ./report.html)")
    p.add_argument("--epochs", default="", help="also draw the cells derived after these epochs, e.g. 10,25")
    args = p.parse_args(argv[1:])
    try:
        epochs = [int(e) for e in args.epochs.split(",") if e.strip()]
    except ValueError:
        _fail(f"--epochs={args.epochs!r}: accepted a comma-separated list of epoch numbers, e.g. 10,25")
    try:
        out = report.write_report(args.workdirs, args.out, epochs)
    except (FileNotFoundError, ImportError) as e:
        _fail(str(e), 2)
    print(f"report written to {out}")
    return 0
