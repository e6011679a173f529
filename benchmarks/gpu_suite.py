"""The GPU measurements of issues 4 and 6 in one command, for a lent GPU machine (the
`device` tool), where every minute counts: runs a named list of jobs one after the other
(never concurrently), each in its own process with its own timeout, skips what cannot
finish before ``--deadline``, and appends each job's JSON line to ``--out``. With
``--parallel N`` up to N jobs compile at once (XLA compiles on the host's CPUs) while a
file lock keeps their timed steps from overlapping on the GPU; each job's log goes to
``--logs``. ``--xla_gpu_enable_triton_gemm=false`` is set: with it on, XLA 0.11.2 aborts
compiling the search step (``triton_tiling_propagation.cc:703 Check failed:
subdim_size_accumulator == dim_size (256 vs. 32)``, H100, 2026-11-22).

    python benchmarks/gpu_suite.py --deadline 470 --parallel 2 --out $OUT/gpu.jsonl --summary $OUT/gpu.json
    python benchmarks/gpu_suite.py --jobs smoke,torch,first_order --deadline 560 --out $OUT/gpu.jsonl
    python benchmarks/gpu_suite.py --jobs estimators,batch256 --deadline 560 --out $OUT/gpu.jsonl

The default ``--jobs table`` is the GPU table of README's performance section, within 8
minutes on one GPU: the paper-size search step (compile and median step) for first order,
finite-difference and exact (``unrolled``) second order, MS-DARTS with N=3 samples and
BaLeNAS with 2 VAdam samples (their own estimators), the 50-epoch CIFAR-10 first-order
search extrapolated from the measured step, retraining images/s (``retrain_speed.py``, the
DARTS_V2 network at C=36, 20 cells, batch 96) and the README quick start (wall time, cold
cache). ``--summary`` writes them as one JSON object; ``--tiny`` runs every job at a smoke
size (the test suite does, on CPU). Job names may be given alone (``--jobs step_first_order,retrain``).

Paper size throughout: DARTS space, C=16, 8 cells, 32x32x3, batch 64 unless named.
The projected 50-epoch CIFAR-10 search (25,000 training images, as DARTS splits the
training set in half) is ``compile + 50 * ceil(25000 / batch) * step``; it leaves out
evaluation and input pipeline time.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable
SS = os.path.join(HERE, "search_step.py")
TR = os.path.join(HERE, "torch_reference.py")
RS = os.path.join(HERE, "retrain_speed.py")
SEARCH = os.path.join(HERE, "..", "bin", "search.py")


LOCK = "/tmp/jaxdarts_gpu_suite.lock"


def _ss(est, batch=64, depthwise="conv", steps=20, extra=()):
    return [PY, SS, "--estimator", est, f"--batch={batch}", f"--depthwise={depthwise}", f"--steps={steps}",
            f"--lock={LOCK}", *extra]


def _tr(mode, batch=64, steps=20):
    return [PY, TR, f"--mode={mode}", f"--batch={batch}", f"--steps={steps}", "--device=cuda"]


JOBS = {
    "smoke": [("kernels tests", [PY, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                 os.path.join(HERE, "..", "tests", "test_kernels.py")], 150)],
    "torch": [("torch first_order b64", _tr("first_order"), 90),
              ("torch second_order b64", _tr("second_order"), 90),
              ("torch first_order b256", _tr("first_order", 256), 90)],
    "first_order": [("jax first_order b64 conv", _ss("first_order"), 520)],
    "estimators": [("jax unrolled b64", _ss("unrolled"), 520),
                   ("jax amended b64", _ss("amended"), 520),
                   ("jax implicit cg5 b64", _ss("implicit", extra=["--cg_iters=5"]), 520),
                   ("jax implicit cg10 b64", _ss("implicit", extra=["--cg_iters=10"]), 520),
                   ("jax finite_difference b64", _ss("finite_difference"), 520)],
    "batch256": [("jax first_order b256 conv", _ss("first_order", batch=256), 520),
                 ("jax unrolled b256 conv", _ss("unrolled", batch=256), 520)],
    "taps": [("jax first_order b64 taps", _ss("first_order", depthwise="taps"), 520)],
    "table": [("step_first_order", _ss("first_order"), 300),
              ("step_finite_difference", _ss("finite_difference"), 300),
              ("step_unrolled", _ss("unrolled"), 400),
              ("step_msdarts_n3", _ss("default", extra=["--method=msdarts", "--num_samples=3"]), 300),
              ("step_balenas_s2", _ss("default", extra=["--method=balenas", "--num_samples=2"]), 400),
              ("retrain", [PY, RS], 240),
              ("quickstart", [PY, SEARCH, "--config", "configs/balenas.py:quick", "--workdir",
                              "/tmp/jaxdarts_gpu_suite_quickstart", "--compilation_cache", "none"], 240)],
}
TINY = {SS: ["--C=4", "--layers=3", "--batch=8", "--size=8", "--steps=2"],
        RS: ["--C=4", "--layers=3", "--batch=8", "--steps=2"],
        SEARCH: ["--config.epochs=1", "--config.steps_per_epoch=1", "--config.balenas.num_candidates=2"]}
"""Smoke-size arguments per script (``--tiny``), appended after the job's own."""


def _queue(spec: str) -> list:
    """Jobs of ``spec``: groups of :data:`JOBS` and single job names, comma-separated."""
    by_name = {name: job for group in JOBS.values() for job in group for name in (job[0],)}
    out = []
    for item in spec.split(","):
        if item in JOBS:
            out += JOBS[item]
        elif item in by_name:
            out.append(by_name[item])
        else:
            raise SystemExit(f"--jobs: unknown job {item!r}; accepted: {', '.join(list(JOBS) + list(by_name))}")
    return out


def summary(records: list) -> dict:
    """The records of one suite run as one JSON object: per job its record, the device, the
    date, and the projected 50-epoch first-order search."""
    jobs = {r["job"]: r for r in records}
    dev = next((r["device"] for r in records if "device" in r), None)
    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "device": dev, "jobs": jobs}
    fo = jobs.get("step_first_order", {})
    if "projected_50_epochs_min" in fo:
        out["first_order_50_epochs_min"] = fo["projected_50_epochs_min"]
    if "images_per_s" in jobs.get("retrain", {}):
        out["retrain_images_per_s"] = jobs["retrain"]["images_per_s"]
    if "quickstart" in jobs and "rc" not in jobs["quickstart"]:
        out["quickstart_s"] = jobs["quickstart"]["wall_s"]
    return out


def _record(name, rc, out, err, wall):
    lines = out.strip().splitlines()
    rec = None
    if lines:
        try:
            rec = json.loads(lines[-1])
        except json.JSONDecodeError:
            rec = {"tail": lines[-3:]}
    if rc or rec is None:
        keep = [ln for ln in err.strip().splitlines() if not ln.startswith("    @ ")]
        rec = {**(rec or {}), "rc": rc, "stderr": keep[-4:]}
    rec = {"job": name, "wall_s": round(wall, 1), **rec}
    if "median_step_s" in rec and "batch" in rec and "estimator" in rec:  # a search step
        steps = 50 * math.ceil(25000 / rec["batch"])
        rec["projected_50_epochs_min"] = round((steps * rec["median_step_s"] + rec.get("compile_s", 0)) / 60, 1)
    return rec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", default="table")
    ap.add_argument("--summary", default="", help="write the run's records as one JSON object here")
    ap.add_argument("--tiny", action="store_true", help="every job at a smoke size (CPU tests)")
    ap.add_argument("--deadline", type=float, default=560, help="seconds from start; later jobs are skipped")
    ap.add_argument("--out", default="gpu.jsonl")
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--logs", default="/tmp/jaxdarts_gpu_logs")
    ap.add_argument("--extra", default="", help="arguments appended to every jaxdarts job (e.g. '--C=4 --size=8')")
    a = ap.parse_args()
    flags = os.environ.get("XLA_FLAGS", "")
    if "triton_gemm" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_gpu_enable_triton_gemm=false").strip()
    if a.parallel > 1:
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    os.makedirs(a.logs, exist_ok=True)
    t_start = time.time()
    queue = _queue(a.jobs)
    running, records = [], []

    def emit(rec):
        records.append(rec)
        print(json.dumps(rec), flush=True)
        with open(a.out, "a") as f:
            f.write(json.dumps(rec) + "\n")

    while queue or running:
        now = time.time()
        while queue and len(running) < a.parallel:
            name, cmd, timeout = queue.pop(0)
            if cmd[1] == SS:
                cmd = cmd + a.extra.split()
            if a.tiny:
                cmd = cmd + TINY.get(cmd[1], [])
            left = a.deadline - (now - t_start)
            if left < 30:
                print(f"[skip] {name}: {left:.0f} s left", flush=True)
                continue
            log = os.path.join(a.logs, name.replace(" ", "_") + ".log")
            fo, fe = open(log + ".out", "w+"), open(log, "w+")
            running.append((name, subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=os.path.join(HERE, "..")), fo, fe, now, min(timeout, left)))
        for item in list(running):
            name, proc, fo, fe, t0, limit = item
            if proc.poll() is None and time.time() - t0 < limit:
                continue
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                fe.seek(0)
                keep = [ln for ln in fe.read().splitlines() if not ln.startswith("    @ ")]
                emit({"job": name, "error": f"timed out after {limit:.0f} s", "stderr": keep[-2:]})
            else:
                fo.seek(0)
                fe.seek(0)
                emit(_record(name, proc.returncode, fo.read(), fe.read(), time.time() - t0))
            fo.close()
            fe.close()
            running.remove(item)
        time.sleep(0.5)
    if a.summary:
        with open(a.summary, "w") as f:
            json.dump(summary(records), f, indent=1)


if __name__ == "__main__":
    main()
