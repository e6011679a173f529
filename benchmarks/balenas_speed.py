"""BaLeNAS step cost vs DARTS at the quick size, and training-free scoring throughput.

Times the jitted search step of ``configs/balenas.py:quick`` (first order, 1/2/4 Monte-Carlo
samples as one vmap) against ``configs/darts.py:quick`` (first order, Adam), after a
warm-up, on the same batches; then Synflow and SNIP candidates scored per second with the
quick run's scoring network (the DARTS supernet, C=8, 3 cells, one-hot alphas).

    python benchmarks/balenas_speed.py          # ~8 min on 2 CPU cores
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxdarts import genotype as G  # noqa: E402
from jaxdarts import config as config_lib  # noqa: E402
from jaxdarts import proxies, search  # noqa: E402
from jaxdarts.methods import balenas  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def load(name, arg):
    return config_lib.load_file(os.path.join(ROOT, "configs", f"{name}.py"), arg)


def time_step(cfg, reps=20):
    task = search.SearchTask.from_config(cfg)
    state = task.init_state()
    step = jax.jit(task.search_step)
    tb, vb = task.train_stream.batch(0, 0), task.val_stream.batch(0, 0)
    sched = task.schedule_values(1)
    t = time.time()
    state, m = step(state, tb, vb, sched)
    jax.block_until_ready(m)
    compile_s = time.time() - t
    t = time.time()
    for _ in range(reps):
        state, m = step(state, tb, vb, sched)
    jax.block_until_ready(m)
    return compile_s, (time.time() - t) / reps, task


def main():
    rows = []

    c, s, _ = time_step(load("darts", "quick"))
    rows.append(("DARTS 1st order (Adam)", c, s))
    darts_s = s
    task = None
    for n in (1, 2, 4):
        cfg = load("balenas", "quick,argmax")
        cfg.balenas.vadam.num_samples = n
        c, s, task = time_step(cfg)
        rows.append((f"BaLeNAS 1st order, {n} sample(s)", c, s))
    print("| step | compile (s) | step time (ms) | vs DARTS |\n|---|---|---|---|")
    for name, c, s in rows:
        print(f"| {name} | {c:.1f} | {1000 * s:.1f} | {s / darts_s:.2f}x |")
    space = task.space
    model = balenas.scoring_model(task)
    cands = balenas.uniform_architectures(space, jax.random.key(0), 64)
    alphas = {t: jnp.stack([G.to_alpha(space, g)[t] for g in cands]) for t in space.cell_types}
    keys = jax.random.split(jax.random.key(1), 64)
    b = task.preprocess(jax.random.key(2), task.train_stream.batch(0, 0), True, 0.0)
    data = {"synflow": (1, 16, 16, 1), "snip": {"image": b["image"], "label": b["label"]}}
    print("\n| proxy | compile + first 64 (s) | candidates / s after compile |\n|---|---|---|")
    for name in ("synflow", "snip"):
        sc = proxies.make_scorer(name, model)
        t = time.time()
        sc(alphas, keys, data[name])
        first = time.time() - t
        t = time.time()
        sc(alphas, keys, data[name])
        print(f"| {name} | {first:.1f} | {64 / (time.time() - t):.1f} |")


if __name__ == "__main__":
    main()
