"""Command-line entry for ``bin/search.py`` (kept here so it is importable and tested)."""

from __future__ import annotations

import sys

USAGE = ("usage: search.py --config configs/X.py[:variant] --workdir DIR [--config.FIELD=VALUE ...] "
         "[--max_epochs N]")


def _fail(msg: str, code: int = 2):
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(code)


def main(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    from absl import flags
    from ml_collections import config_flags

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "config file[:variant]", flag_values=fv, lock_config=True)
    flags.DEFINE_string("workdir", None, "run directory (re-running resumes)", flag_values=fv)
    flags.DEFINE_integer("max_epochs", None, "stop after this many epochs of this invocation", flag_values=fv)
    try:
        fv(argv)
    except flags.Error as e:
        _fail(str(e).splitlines()[0])
    except (KeyError, AttributeError, ValueError, TypeError) as e:
        _fail(f"bad --config override: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    if fv.config is None:
        _fail("--config is required; " + USAGE)
    if not fv.workdir:
        _fail("--workdir is required; " + USAGE)
    from jaxdarts import config as config_lib

    cfg = fv.config
    try:
        config_lib.validate(cfg)
    except config_lib.ConfigError as e:
        _fail(str(e))
    from jaxdarts import data as data_lib
    from jaxdarts import search

    try:
        if cfg.runner == "rdarts":
            from jaxdarts import rdarts

            out = rdarts.run(cfg, fv.workdir)
        else:
            out = search.run(cfg, fv.workdir, max_epochs=fv.max_epochs)
    except data_lib.DatasetNotPreparedError as e:
        _fail(str(e), 1)
    except search.NonFiniteLossError as e:
        _fail(str(e), 1)
    except ValueError as e:  # e.g. resuming a workdir with another config
        _fail(str(e), 2)
    print(f"genotype written to {fv.workdir}/genotype.json")
    if "genotype_str" in out:
        print(out["genotype_str"])
    if out.get("stop_reason"):
        print(out["stop_reason"])
    return 0
