"""MS-DARTS small-scale reproductions on the embedded Fashion-MNIST (results in RESULTS.md).

Stages:

* ``speed``: the jitted search step at the quick size (``configs/*.py:quick``: DARTS space,
  C=8, 3 cells, batch 32, 16x16) for DARTS, MS-DARTS with N = 2, 3, 4 samples (T = 2),
  SDARTS-RS and SDARTS-ADV; compile time and step time after a warm-up, same batches.
* ``table4``: the Table 4 analogue. NAS-Bench-201 space (30 alphas), C=8, one cell per
  stage, 16x16, ``--epochs`` x ``--steps`` of batch 32, alpha steps from the first epoch;
  MS-DARTS for h in {0.2, 0.4, ..., 1.4} as ONE vmapped sweep
  (``Sweep('msdarts.bandwidth', ...)``: one compiled step for all seven), then DARTS and
  SDARTS-RS on the same budget and seed. After every epoch the dominant eigenvalue of the
  validation-loss Hessian w.r.t. alpha (+ the arch weight-decay term; the last step's
  architecture batch, training-mode BN, as :class:`jaxdarts.hooks.HessianHook`), for every
  run (vmapped over the sweep). Reported as mean +- std per quarter of the search, with
  the final cell and its tabulated CIFAR-10 accuracy (AnalogNAS-Bench; needs the ``nb201``
  extra; the search itself is on Fashion-MNIST, so only the trend is comparable).
* ``fig4``: the Figure 4 analogue. DARTS vs MS-DARTS at the quick size for ``--fig4_epochs``
  epochs (alpha steps from epoch 0 for both): the epoch's training loss against the
  distance ||alpha_t - alpha_final|| of the epoch's alpha logits from the final ones.

    python benchmarks/msdarts.py --stage all --out_dir /tmp/msdarts_bench   # ~40 min on 2 cores
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxdarts import config as config_lib  # noqa: E402
from jaxdarts import genotype as G  # noqa: E402
from jaxdarts import hooks, nb201, search  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BANDWIDTHS = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4)


def load(name, arg):
    return config_lib.load_file(os.path.join(ROOT, "configs", f"{name}.py"), arg)


# ------------------------------------------------------------------ speed
def time_step(cfg, reps=10):
    task = search.SearchTask.from_config(cfg)
    state = task.init_state()
    step = jax.jit(task.search_step)
    tb, vb = task.train_stream.batch(0, 0), task.val_stream.batch(0, 0)
    sched = {**task.schedule_values(cfg.epochs - 1), "arch_update": np.float32(1)}
    t = time.time()
    state, m = step(state, tb, vb, sched)
    jax.block_until_ready(m)
    compile_s = time.time() - t
    t = time.time()
    for _ in range(reps):
        state, m = step(state, tb, vb, sched)
    jax.block_until_ready(m)
    return compile_s, (time.time() - t) / reps


def stage_speed(args):
    rows = [("DARTS 1st order", *time_step(load("darts", "quick")))]
    for n in (2, 3, 4):
        cfg = load("msdarts", "quick")
        cfg.msdarts.num_samples = n
        rows.append((f"MS-DARTS N={n}, T=2", *time_step(cfg)))
    rows.append(("SDARTS-RS", *time_step(load("sdarts", "rs,quick"))))
    rows.append(("SDARTS-ADV (7 steps)", *time_step(load("sdarts", "adv,quick"))))
    base = rows[0][2]
    lines = ["| step | compile (s) | step time (ms) | vs DARTS |", "|---|---|---|---|"]
    lines += [f"| {n} | {c:.1f} | {1000 * s:.1f} | {s / base:.2f}x |" for n, c, s in rows]
    print("\n".join(lines), flush=True)
    with open(os.path.join(args.out_dir, "speed.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


# ----------------------------------------------------------------- table 4
def nb201_config(method, args):
    c = config_lib.base(method)
    c.dataset, c.space = "fashion_mnist", "nb201"
    c.data.image_size, c.data.max_examples = 16, args.max_examples
    c.model.C, c.model.layers = 8, 1
    c.batch_size, c.epochs, c.steps_per_epoch = 32, args.epochs, args.steps
    c.arch_start_epoch = 0
    c.eval_batches, c.progress, c.log_every = 8, "log", 50
    return c


def eigen_fn(task):
    """Dominant eigenvalue of each run of a (stacked) sweep state, as HessianHook computes it."""
    wd = float(task.cfg.optim.arch_weight_decay)

    def one(state, tb, vb, sched):
        _, _, b = task.step_batches(search.fold_key(state.rng, state.step - 1), tb, vb, sched)
        _, val_loss = task.losses(state.batch_stats)

        def loss(alpha):
            return val_loss(state.params, alpha, b) + 0.5 * wd * sum(jnp.sum(a ** 2) for a in jax.tree.leaves(alpha))

        return hooks.dominant_eigenvalues(loss, state.alpha)[0]

    return jax.jit(jax.vmap(one, in_axes=(0, None, None, 0)))


def run_with_eigenvalues(cfg, sweep, workdir, log):
    """Runs (resumes) the sweep epoch by epoch; the eigenvalues of every finished epoch are
    kept in ``workdir/eigenvalues.json`` so an interrupted benchmark resumes too."""
    task = search.SearchTask.from_config(cfg)
    runner = search.Runner(task, workdir, log=lambda *_: None, sweep=sweep)
    runner.restore_or_init()
    eig = eigen_fn(task)
    spe = task.steps_per_epoch
    path = os.path.join(workdir, "eigenvalues.json")
    curves = json.load(open(path))[:runner.epoch] if os.path.exists(path) else []
    t0 = time.time()
    while not runner.finished:
        epoch = runner.epoch
        runner.run(max_epochs=1)
        tb, vb = task.train_stream.batch(epoch, spe - 1), task.val_stream.batch(epoch, spe - 1)
        curves.append(np.asarray(eig(runner.state, tb, vb, runner.schedule(epoch))).tolist())
        json.dump(curves, open(path, "w"))
        log(f"{sweep.target} epoch {epoch}: eigenvalues {np.round(curves[-1], 4).tolist()} ({time.time() - t0:.0f} s)")
    gens = [task.derive(jax.tree.map(lambda a: a[r], runner.state.alpha)) for r in range(len(sweep.values))]
    return np.array(curves).T, gens, time.time() - t0  # (runs, epochs)


def stage_table4(args):
    path = os.path.join(args.out_dir, "table4.json")
    out = json.load(open(path)) if os.path.exists(path) else {}
    log = lambda m: print(m, flush=True)
    plan = [("msdarts", search.Sweep("msdarts.bandwidth", BANDWIDTHS), [f"MS-DARTS h={h}" for h in BANDWIDTHS]),
            ("darts", search.Sweep("seed", (2,)), ["DARTS"]),
            ("sdarts", search.Sweep("seed", (2,)), ["SDARTS-RS"])]
    for method, sweep, names in plan:
        if names[0] in out:
            continue
        curves, gens, secs = run_with_eigenvalues(nb201_config(method, args), sweep,
                                                  os.path.join(args.out_dir, f"t4_{method}"), log)
        for name, c, g in zip(names, curves, gens):
            s = g.to_nb201_str()
            out[name] = {"eigenvalues": c.tolist(), "nb201_str": s,
                         "cifar10_acc": nb201.accuracy(g) if nb201.available() else None, "seconds": secs}
        json.dump(out, open(path, "w"))
    E = args.epochs
    q = [(i * E // 4, (i + 1) * E // 4) for i in range(4)]
    lines = ["| run | " + " | ".join(f"epochs {a + 1}-{b}" for a, b in q) + " | final cell | C10 acc (table) |",
             "|---|" + "---|" * 4 + "---|---|"]
    for name, r in out.items():
        ev = np.array(r["eigenvalues"])
        cells = " | ".join(f"{ev[a:b].mean():.4f} ± {ev[a:b].std():.4f}" for a, b in q)
        acc = "n/a" if r["cifar10_acc"] is None else f"{r['cifar10_acc']:.2f}"
        lines.append(f"| {name} | {cells} | `{r['nb201_str']}` | {acc} |")
    print("\n".join(lines), flush=True)
    with open(os.path.join(args.out_dir, "table4.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


# ------------------------------------------------------------------ fig 4
def stage_fig4(args):
    path = os.path.join(args.out_dir, "fig4.json")
    out = json.load(open(path)) if os.path.exists(path) else {}
    for name, (file, arg) in {"DARTS": ("darts", "quick"), "MS-DARTS": ("msdarts", "quick")}.items():
        if name in out:
            continue
        cfg = load(file, arg)
        cfg.epochs, cfg.arch_start_epoch, cfg.progress = args.fig4_epochs, 0, "log"
        task = search.SearchTask.from_config(cfg)
        runner = search.Runner(task, os.path.join(args.out_dir, f"f4_{file}"), log=lambda *_: None)
        alphas, losses, t0 = [], [], time.time()
        while not runner.finished:
            runner.run(max_epochs=1)
            alphas.append(np.concatenate([np.ravel(runner.state.alpha[t]) for t in sorted(runner.state.alpha)]))
            losses.append(runner.history[-1]["train_loss"])
        dist = [float(np.linalg.norm(a - alphas[-1])) for a in alphas]
        out[name] = {"distance": dist, "train_loss": losses, "seconds": time.time() - t0,
                     "val_acc": runner.history[-1]["val_acc"]}
        print(name, out[name], flush=True)
        json.dump(out, open(path, "w"))
    lines = ["| epoch | " + " | ".join(f"{n}: alpha-distance, train loss" for n in out) + " |",
             "|---|" + "---|" * len(out)]
    for e in range(args.fig4_epochs):
        lines.append(f"| {e + 1} | " + " | ".join(f"{r['distance'][e]:.3f}, {r['train_loss'][e]:.3f}"
                                                 for r in out.values()) + " |")
    print("\n".join(lines), flush=True)
    with open(os.path.join(args.out_dir, "fig4.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", default="all", choices=["speed", "table4", "fig4", "all"])
    p.add_argument("--out_dir", default="/tmp/msdarts_bench")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--max_examples", type=int, default=2560)
    p.add_argument("--fig4_epochs", type=int, default=8)
    args = p.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    for stage in (("speed", "table4", "fig4") if args.stage == "all" else (args.stage,)):
        {"speed": stage_speed, "table4": stage_table4, "fig4": stage_fig4}[stage](args)


if __name__ == "__main__":
    main()
