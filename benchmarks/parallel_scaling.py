"""Data-parallel throughput on 1, 2, 4, 8 devices (simulated CPU devices by default).

Retraining: ``configs/retrain_cifar.py:quick`` network (DARTS_V2 cell, C=8, 5 cells, 32x32
Fashion-MNIST) at a global batch of ``--batch`` images; the search step of
``configs/darts.py:quick`` (first order) at its batch of 32 on 1 and 8 devices. Reported:
compile time, images/s, images/s per device and scaling efficiency
(``throughput(n) / (n * throughput(1))``) and the ratio to one device. On simulated CPU devices all "devices" share
the host's cores, so the efficiency measures the overhead of the sharded program (the
collectives and per-device launch), not a speed-up; on a GPU/TPU host the same script
measures the real scaling.

    python benchmarks/parallel_scaling.py --out /tmp/parallel_scaling.json
"""

import argparse
import json
import os
import sys
import time

if "--real" not in sys.argv:
    import jax

    jax.config.update("jax_num_cpu_devices", 8)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxdarts import config as config_lib  # noqa: E402
from jaxdarts import parallel, retrain, search  # noqa: E402
from jaxdarts.runner import _to_mesh  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def load(name, arg):
    return config_lib.load_file(os.path.join(ROOT, "configs", f"{name}.py"), arg)


def time_retrain(n, batch, steps):
    cfg = load("retrain_cifar", "quick")
    cfg.batch_size = cfg.eval_batch_size = batch
    t = retrain.Trainer(cfg, "DARTS_V2", mesh=parallel.make_mesh(n))
    state = t.init_state()
    batches = list(t.stream.epoch(0, 0, steps + 1))
    c = time.time()
    state, m = t.train_step(state, batches[0], 1)
    jax.block_until_ready(m)
    compile_s = time.time() - c
    c = time.time()
    for b in batches[1:]:
        state, m = t.train_step(state, b, 1)
    jax.block_until_ready(m)
    return compile_s, steps * batch / (time.time() - c)


def time_search(n, steps):
    cfg = load("darts", "quick")
    cfg.mesh.num_devices = n
    task = search.SearchTask.from_config(cfg)
    runner = search.Runner(task, f"/tmp/parallel_scaling_search_{n}", log=lambda *_: None)
    runner.state = task.init_state()
    step, _ = runner._fns()
    sched = {**task.schedule_values(cfg.epochs - 1), "arch_update": np.float32(1)}
    mesh = runner.mesh
    tb, vb = task.train_stream.batch(0, 0), task.val_stream.batch(0, 0)
    if mesh is not None:
        tb, vb = _to_mesh(mesh, tb), _to_mesh(mesh, vb)
        runner.state = jax.device_put(runner.state, parallel.replicated(mesh))
    state = runner.state
    c = time.time()
    state, m = step(state, tb, vb, sched)
    jax.block_until_ready(m)
    compile_s = time.time() - c
    c = time.time()
    for _ in range(steps):
        state, m = step(state, tb, vb, sched)
    jax.block_until_ready(m)
    return compile_s, steps * cfg.batch_size / (time.time() - c)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--devices", default="1,2,4,8")
    p.add_argument("--real", action="store_true", help="the host's real devices (no simulated CPU devices)")
    p.add_argument("--out", default="/tmp/parallel_scaling.json")
    args = p.parse_args()
    devs = [int(d) for d in args.devices.split(",") if int(d) <= len(jax.devices())]
    rows = {"retrain": {}, "search": {}, "platform": jax.default_backend(), "batch": args.batch}
    for n in devs:
        rows["retrain"][n] = time_retrain(n, args.batch, args.steps)
        print("retrain", n, rows["retrain"][n], flush=True)
    for n in (devs[0], devs[-1]):
        rows["search"][n] = time_search(n, args.steps)
        print("search", n, rows["search"][n], flush=True)
    json.dump(rows, open(args.out, "w"), indent=1)
    lines = ["| program | devices | compile (s) | images/s | vs 1 device | images/s per device | efficiency |",
             "|---|---|---|---|---|---|---|"]
    for what in ("retrain", "search"):
        base = rows[what][min(rows[what])][1]
        for n, (c, ips) in rows[what].items():
            lines.append(f"| {what} | {n} | {c:.1f} | {ips:.0f} | {ips / base:.2f}x | {ips / n:.0f} | "
                         f"{ips / (n * base):.2f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
