"""The issue's headline ratio, measured side by side in one run: jaxdarts search step vs the
PyTorch reference step (``benchmarks/torch_reference.py``) on the same machine, same
sizes, each in its own process, one after the other (never concurrently: PyTorch's
OpenMP threads and XLA's compile threads slow each other down by 10x or more).

    python benchmarks/vs_pytorch.py --batch 32 --mode first_order
    python benchmarks/vs_pytorch.py --batch 64 --mode first_order --remat
    python benchmarks/vs_pytorch.py --batch 64 --edge_loop vmap     # the supernet's edges in waves

Prints the two JSON lines and ``ratio = jax / pytorch`` of the median step times.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd):
    r = subprocess.run([sys.executable] + cmd, capture_output=True, text=True)
    line = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return {"error": (r.stderr.strip().splitlines() or ["no output"])[-1]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="first_order", choices=("first_order", "second_order"))
    ap.add_argument("--C", type=int, default=16)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--remat", action="store_true")
    ap.add_argument("--edge_loop", default="auto", choices=("auto", "scan", "vmap"))
    a = ap.parse_args()
    common = [f"--C={a.C}", f"--layers={a.layers}", f"--batch={a.batch}", f"--size={a.size}", f"--steps={a.steps}"]
    torch_res = run([os.path.join(HERE, "torch_reference.py"), f"--mode={a.mode}"] + common)
    print(json.dumps(torch_res), flush=True)
    est = "first_order" if a.mode == "first_order" else "finite_difference"
    jax_res = run([os.path.join(HERE, "search_step.py"), "--estimator", est, f"--edge_loop={a.edge_loop}"] + common
                  + (["--remat"] if a.remat else []))
    print(json.dumps(jax_res), flush=True)
    if "median_step_s" in torch_res and "median_step_s" in jax_res:
        print(f"ratio jax/pytorch = {jax_res['median_step_s'] / torch_res['median_step_s']:.2f}")


if __name__ == "__main__":
    main()
