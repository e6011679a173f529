"""Why 1 and 4 devices give different retraining curves: float32 rounding, amplified.

Trains ``configs/retrain_cifar.py:quick`` (DARTS_V2, embedded Fashion-MNIST) for ``--steps``
steps three times from the same initial state and batches: on 1 device, on 4 simulated CPU
devices (the batch sharded, BatchNorm statistics and random numbers of the global batch),
and on 1 device from weights multiplied by ``1 + 1e-7 * N(0, 1)`` (a rounding-level change).
Prints the largest loss difference to the 1-device run in windows of steps: if the
4-device run diverges no faster than the perturbed one, the difference is the sharded
reductions' summation order amplified by training, not a different computation.

    python benchmarks/data_parallel_divergence.py --steps 80     # ~6 min on 2 CPU cores
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

import numpy as np  # noqa: E402

from jaxdarts import config as config_lib  # noqa: E402
from jaxdarts import parallel, retrain  # noqa: E402


def run(cfg, n, eps, steps):
    cfg.mesh.num_devices = n
    tr = retrain.Trainer(cfg, cfg.genotype, mesh=parallel.make_mesh(n))
    st = tr.init_state()
    if eps:
        host = jax.device_get(st)
        rng = np.random.default_rng(0)
        params = jax.tree.map(lambda p: (p * (1 + eps * rng.standard_normal(p.shape))).astype(p.dtype), host.params)
        st = jax.device_put(host._replace(params=params), tr.state_sharding)
    losses, epoch = [], 0
    while len(losses) < steps:
        for b in tr.stream.epoch(epoch, 0, tr.steps_per_epoch):
            st, m = tr.train_step(st, b, epoch)
            losses.append(float(m["loss"]))
            if len(losses) == steps:
                break
        epoch += 1
    return losses


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--devices", type=int, default=4)
    a = p.parse_args()
    cfg = config_lib.load_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs",
                                            "retrain_cifar.py"), "quick")
    runs = {"1 device": run(cfg, 1, 0.0, a.steps), f"{a.devices} devices": run(cfg, a.devices, 0.0, a.steps),
            "1 device, weights x (1 + 1e-7 N(0,1))": run(cfg, 1, 1e-7, a.steps)}
    base = np.asarray(runs["1 device"])
    windows = [(0, 5), (5, 20), (20, 40), (40, a.steps)]
    print("| run | " + " | ".join(f"steps {s + 1}-{e}" for s, e in windows) + " |")
    print("|---|" + "---|" * len(windows))
    for k, v in list(runs.items())[1:]:
        d = np.abs(np.asarray(v) - base)
        print(f"| {k} | " + " | ".join(f"{d[s:e].max():.1e}" for s, e in windows) + " |")
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
