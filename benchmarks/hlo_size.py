"""Size of the program XLA must compile: StableHLO op count of the jitted search step
(before XLA's optimisation), of one mixed op's forward+backward, and trace/lower time.
Compile time grows with this count on every backend, and counting needs no compile, so
it is a fast, platform-independent proxy to track.

    python benchmarks/hlo_size.py                          # paper size, both lowerings
    python benchmarks/hlo_size.py --C 8 --layers 3 --batch 32 --size 16 --estimators first_order,amended

Prints one JSON line per (lowering, estimator).
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))


def stablehlo_ops(lowered) -> int:
    return sum(1 for line in lowered.as_text().splitlines() if "=" in line and "stablehlo." in line)


def mixed_op_ops(lowering: str, C=16, hw=32, batch=64) -> int:
    import jax
    import jax.numpy as jnp

    from jaxdarts import ops, supernet

    m = supernet.MixedOp(ops.PRIMITIVES, C, 1, True, lowering=lowering)
    x = jnp.zeros((batch, hw, hw, C))
    w = jnp.ones(len(ops.PRIMITIVES))
    v = jax.eval_shape(lambda: m.init(jax.random.key(0), x, w))

    def loss(p, x, bs):
        return m.apply({"params": p, "batch_stats": bs}, x, w, mutable=["batch_stats"])[0].sum()

    return stablehlo_ops(jax.jit(jax.grad(loss, (0, 1))).lower(v["params"], x, v.get("batch_stats", {})))


def main():
    from search_step import bench_task, size_args

    ap = size_args(argparse.ArgumentParser())
    ap.add_argument("--lowerings", default="conv,taps")
    ap.add_argument("--estimators", default="first_order")
    a = ap.parse_args()
    import jax

    for lowering in a.lowerings.split(","):
        mixed = mixed_op_ops(lowering)
        for est in a.estimators.split(","):
            task, state, tb, vb = bench_task(a.C, a.layers, a.batch, a.size, est, lowering)
            t = time.time()
            lowered = jax.jit(task.search_step).lower(state, tb, vb, task.schedule_values(0))
            print(json.dumps({"lowering": lowering, "estimator": est, "C": a.C, "layers": a.layers, "batch": a.batch,
                              "size": a.size, "step_stablehlo_ops": stablehlo_ops(lowered),
                              "trace_lower_s": round(time.time() - t, 2),
                              "mixed_op_fwd_bwd_stablehlo_ops": mixed}), flush=True)


if __name__ == "__main__":
    main()
