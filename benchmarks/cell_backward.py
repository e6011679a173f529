"""Forward vs forward+backward time of one supernet cell: isolates the backward-pass
pathology recorded in RESULTS.md (the cell's backward costs ~45x its forward on XLA:CPU).

    python benchmarks/cell_backward.py [--space darts] [--C 16] [--batch 64] [--size 32] [--depthwise taps]
    XLA_FLAGS=--xla_dump_to=/tmp/dump python benchmarks/cell_backward.py ...   # to inspect the HLO
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxdarts import kernels, spaces, supernet  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="darts")
    ap.add_argument("--C", type=int, default=16)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--depthwise", default="taps", choices=kernels.LOWERINGS)
    ap.add_argument("--reduction", action="store_true")
    a = ap.parse_args()
    sp = spaces.get(a.space)
    ctype = "reduce" if a.reduction else "normal"
    cell = supernet.SearchCell(sp, ctype, a.C, a.reduction, False, 4, True, a.depthwise)
    x = jax.random.normal(jax.random.key(0), (a.batch, a.size, a.size, 4 * a.C))
    w = jax.nn.softmax(jnp.zeros((sp.num_edges, sp.num_ops)), -1)
    v = cell.init(jax.random.key(1), x, x, w)

    def loss(p):
        out, _ = cell.apply({"params": p, "batch_stats": v["batch_stats"]}, x, x, w, mutable=["batch_stats"])
        return jnp.sum(out ** 2)

    for name, f in [("forward", jax.jit(loss)), ("forward+backward", jax.jit(jax.grad(loss)))]:
        t = time.time()
        jax.block_until_ready(f(v["params"]))
        first = time.time() - t
        ts = []
        for _ in range(3):
            t = time.time()
            jax.block_until_ready(f(v["params"]))
            ts.append(time.time() - t)
        print(f"{a.space} {ctype} C={a.C} batch={a.batch} {a.size}px {a.depthwise}: {name} "
              f"compile+first {first:.1f} s, best of 3 {min(ts):.3f} s", flush=True)


if __name__ == "__main__":
    main()
