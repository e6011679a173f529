"""Retraining throughput: images per second of the DARTS evaluation network's training step.

The ``configs/retrain_cifar.py`` recipe (DARTS_V2 cell, C=36, 20 cells, auxiliary head,
drop-path, cutout 16, batch 96, 32x32x3) on random CIFAR-shaped images (the step's cost does
not depend on the pixels), all devices of the host (data parallel). Prints one JSON line:
compile seconds, median step seconds, images/s.

    python benchmarks/retrain_speed.py                       # paper size
    python benchmarks/retrain_speed.py --C 4 --layers 3 --batch 8 --steps 2   # a smoke run
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxdarts import retrain  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--C", type=int, default=36)
    ap.add_argument("--layers", type=int, default=20)
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--genotype", default="DARTS_V2")
    a = ap.parse_args()
    c = retrain.base_config()
    c.model.update(C=a.C, layers=a.layers)
    c.batch_size = c.eval_batch_size = a.batch
    rng = np.random.default_rng(0)
    n = a.batch * 4
    data = ((rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32)),
            (rng.integers(0, 256, (a.batch, 32, 32, 3), dtype=np.uint8), np.zeros(a.batch, np.int32)))
    t = retrain.Trainer(c, a.genotype, data=data)
    state = t.init_state()
    batches = list(t.stream.epoch(0, 0, 2))
    t0 = time.time()
    state, m = t.train_step(state, batches[0], epoch=1)
    jax.block_until_ready(m)
    compile_s = time.time() - t0
    times = []
    for i in range(a.steps):
        t1 = time.time()
        state, m = t.train_step(state, batches[i % 2], epoch=1)
        jax.block_until_ready(m)
        times.append(time.time() - t1)
    step = float(np.median(times))
    print(json.dumps({"job": "retrain", "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
                      "C": a.C, "layers": a.layers, "batch": a.batch, "compile_s": round(compile_s, 2),
                      "median_step_s": round(step, 4), "images_per_s": round(a.batch / step, 1)}))


if __name__ == "__main__":
    main()
