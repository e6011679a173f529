"""Median seconds per search step for each hypergradient estimator, plus trace/compile
time and peak memory, on the DARTS supernet.

    python benchmarks/search_step.py                       # C=16, 8 cells, batch 64, 32x32 (paper size)
    python benchmarks/search_step.py --C 8 --layers 3 --batch 32 --size 16 --estimators first_order,amended

Each estimator runs in a fresh subprocess (so peak RSS / device memory is its own). Prints
one JSON line per estimator; copy the figures into benchmarks/RESULTS.md with machine and
date. On a GPU, `peak_device_gb` is the allocator's peak (``memory_stats``) and
`temp_gb` XLA's buffer assignment for the step's temporaries; `--depthwise conv` (cuDNN
grouped convolution) is the form to use there.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))


def size_args(ap):
    """The supernet/batch size flags (paper size by default)."""
    ap.add_argument("--C", type=int, default=16)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=32)
    return ap


def bench_task(C, layers, batch, size, estimator, depthwise="taps", space="darts", remat=False, cg_iters=5,
               edge_loop="auto", method="darts", num_samples=0):
    """``(task, state, train_batch, val_batch)`` of a search on the embedded dataset with
    CIFAR-like 3-channel ``size`` x ``size`` inputs (the grey channel tiled). ``method``: its
    defaults (``estimator='default'`` keeps the method's estimator); ``num_samples``: MS-DARTS's
    mean-shift samples or BaLeNAS's VAdam samples (0: the method's default)."""
    import numpy as np

    from jaxdarts import config as config_lib
    from jaxdarts import data, search

    c = config_lib.base(method)
    if num_samples and method == "msdarts":
        c.msdarts.num_samples = num_samples
    elif num_samples and method == "balenas":
        c.balenas.vadam.num_samples = num_samples
    c.dataset = "fashion_mnist"
    c.space = space
    c.data.image_size = size
    c.data.max_examples = max(4 * batch, 256)
    c.model.C, c.model.layers, c.model.depthwise, c.model.remat = C, layers, depthwise, remat
    c.model.edge_loop = edge_loop
    c.batch_size = batch
    if estimator != "default":
        c.estimator = estimator
    if estimator == "implicit":
        c.estimator_options.maxiter = cg_iters
        c.estimator_options.damping = 1e-3
    config_lib.validate(c)
    splits = data.load_search_data(c.dataset, None, c.data.max_examples, size, c.data.train_portion)
    rgb = [(np.repeat(x, 3, axis=-1), y) for x, y in splits]
    info = data.DatasetInfo("fashion_mnist3", 10, (0.286,) * 3, (0.353,) * 3)
    task = search.SearchTask.from_arrays(c, *rgb, info)
    return task, task.init_state(), task.train_stream.batch(0, 0), task.val_stream.batch(0, 0)


def one(args):
    import jax
    import numpy as np

    task, state, tb, vb = bench_task(args.C, args.layers, args.batch, args.size, args.estimator, args.depthwise,
                                     args.space, args.remat, args.cg_iters, args.edge_loop, args.method,
                                     args.num_samples)
    tb, vb = jax.device_put((tb, vb))
    sched = task.schedule_values(0)
    step = jax.jit(task.search_step, donate_argnums=0)
    t0 = time.time()
    lowered = step.lower(state, tb, vb, sched)
    t1 = time.time()
    compiled = lowered.compile()
    t2 = time.time()
    compile_rss_gb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)  # trace + compile
    try:
        temp_gb = round(compiled.memory_analysis().temp_size_in_bytes / 2 ** 30, 2)
    except Exception:  # noqa: BLE001 - not every backend reports it
        temp_gb = None
    print(f"trace {t1 - t0:.1f} s, compile {t2 - t1:.1f} s", file=sys.stderr, flush=True)
    lock = open(args.lock, "a") if args.lock else None
    if lock:  # compiles may overlap, timed steps never do
        import fcntl
        fcntl.flock(lock, fcntl.LOCK_EX)
    times = []
    for i in range(args.steps):
        t = time.time()
        state, m = compiled(state, tb, vb, sched)
        jax.block_until_ready(m)
        times.append(time.time() - t)
    if lock:
        lock.close()
    dev = jax.devices()[0]
    stats = dev.memory_stats() or {}
    print(json.dumps({"device": dev.device_kind, "method": args.method, "num_samples": args.num_samples,
                      "estimator": task.estimator, "C": args.C, "layers": args.layers, "batch": args.batch,
                      "size": args.size, "depthwise": args.depthwise, "edge_loop": task.model.edge_loop, "remat": args.remat, "trace_s": round(t1 - t0, 2),
                      "compile_s": round(t2 - t1, 2), "median_step_s": round(float(np.median(times[1:] or times)), 3),
                      "steps": args.steps, "temp_gb": temp_gb, "compile_peak_rss_gb": compile_rss_gb,
                      "peak_device_gb": round(stats["peak_bytes_in_use"] / 2 ** 30, 2) if stats else None,
                      "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)}))


def main():
    ap = size_args(argparse.ArgumentParser())
    ap.add_argument("--space", default="darts")
    ap.add_argument("--depthwise", default="taps", choices=("taps", "conv"))
    ap.add_argument("--remat", action="store_true", help="rematerialise each cell in the backward pass")
    ap.add_argument("--edge_loop", default="auto", choices=("auto", "scan", "vmap"), help="config.model.edge_loop")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--cg_iters", type=int, default=5)
    ap.add_argument("--method", default="darts", help="a registered method (its defaults)")
    ap.add_argument("--num_samples", type=int, default=0, help="MS-DARTS / BaLeNAS samples (0: the method's)")
    ap.add_argument("--lock", default="", help="file lock held while timing (parallel compiles, serial timing)")
    ap.add_argument("--timeout", type=int, default=0, help="seconds per estimator subprocess (0: none)")
    ap.add_argument("--estimators", default="first_order,unrolled,finite_difference,amended,implicit")
    ap.add_argument("--estimator", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.estimator:
        return one(args)
    for est in args.estimators.split(","):
        cmd = [sys.executable, __file__, "--estimator", est] + [
            f"--{k}={v}" for k, v in vars(args).items()
            if k not in ("estimator", "estimators") and not isinstance(v, bool)] + (["--remat"] if args.remat else [])
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout or None)
            out, err = r.stdout.strip(), r.stderr.strip().splitlines()[-1:]
        except subprocess.TimeoutExpired:
            out, err = "", [f"timed out after {args.timeout} s"]
        print(out or json.dumps({"estimator": est, "C": args.C, "batch": args.batch, "error": err}), flush=True)


if __name__ == "__main__":
    main()
