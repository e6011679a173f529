"""RobustDARTS Figure 2 at small scale: DARTS on S5, test regret of the derived cell per epoch.

S5 (one intermediate node, {sep_conv_3x3, skip_connect, max_pool_3x3} on both edges of the
normal and the reduction cell) has 81 architectures. Step 1 trains all of them with one
protocol, as ONE vmapped program over their one-hot alphas: the search network at a
one-hot alpha computes exactly the discrete cell (tests/test_supernet.py), so each of the
81 is a discrete network with the search ops (BatchNorm without affine parameters); every
architecture starts from the same initial weights and sees the same batches. Its test
error (embedded Fashion-MNIST test split, 2,000 images) is the table. Step 2 runs DARTS
(first order, the RobustDARTS code's default; ``--estimator unrolled`` for second order) on S5 on the usual 50/50 split of the training images,
``--seeds`` seeds as one vmapped seed sweep, and reads after every epoch the derived
cell's test error from the table: regret = error(derived) - min over the 81.

    python benchmarks/s5_regret.py --train_epochs 2 --train_steps 150 --batch_size 32 \
        --search_epochs 20 --search_steps 40 --seeds 3      # ~25 min on 2 CPU cores

Prints a Markdown block for benchmarks/RESULTS.md and writes the raw numbers as JSON
(``--out``).
"""

import argparse
import itertools
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxdarts import config as config_lib  # noqa: E402
from jaxdarts import data as data_lib  # noqa: E402
from jaxdarts import genotype as genotype_lib  # noqa: E402
from jaxdarts import search  # noqa: E402


def s5_config(args, epochs, steps_per_epoch):
    c = config_lib.base("darts")
    c.dataset = "fashion_mnist"
    c.space = "s5"
    c.data.image_size = args.image_size
    c.model.C = args.C
    c.model.layers = args.layers
    c.batch_size = args.batch_size
    c.epochs = epochs
    c.steps_per_epoch = steps_per_epoch
    c.progress = "log"
    c.log_every = 50
    return c


def architectures(space):
    """The 81 one-hot alphas (index order: normal edge 0, normal edge 1, reduce edge 0, reduce edge 1)."""
    eye = np.eye(3, dtype=np.float32)
    combos = list(itertools.product(range(3), repeat=4))
    alphas = {"normal": np.stack([eye[[a, b]] for a, b, _, _ in combos]),
              "reduce": np.stack([eye[[c, d]] for _, _, c, d in combos])}
    return combos, alphas


def index_of(space, genotype_dict):
    a = genotype_lib.to_alpha(space, genotype_lib.Genotype.from_json(genotype_dict))
    n, r = np.argmax(np.asarray(a["normal"]), -1), np.argmax(np.asarray(a["reduce"]), -1)
    return int(np.ravel_multi_index((n[0], n[1], r[0], r[1]), (3, 3, 3, 3)))


def train_all(args, log):
    """Test error of each of the 81 architectures after ``train_epochs`` epochs on all
    training images (one vmapped program)."""
    (xw, yw), (xa, ya) = data_lib.load_search_data("fashion_mnist", image_size=args.image_size)
    train = (np.concatenate([xw, xa]), np.concatenate([yw, ya]))
    xt, yt = data_lib.load("fashion_mnist", "test")
    xt = data_lib.resize(xt, args.image_size) if args.image_size != xt.shape[1] else xt
    spe = args.train_steps or len(train[0]) // args.batch_size
    cfg = s5_config(args, args.train_epochs, spe)
    task = search.SearchTask.from_arrays(cfg, train, (xt, yt), data_lib.info("fashion_mnist"))
    combos, alphas = architectures(task.space)
    n = len(combos)
    state = task.init_state()
    states = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), state)
    onehot = jax.tree.map(jnp.asarray, alphas)

    def step(states, batch, key):
        def one(s, w):
            b = task.preprocess(key, batch, True)
            return task.weight_update(s, b, weights=w)
        return jax.vmap(one)(states, onehot)

    step = jax.jit(step, donate_argnums=0)
    ev = jax.jit(jax.vmap(lambda s, w, b: task.eval_step(s, b, w, normalized=True), in_axes=(0, 0, None)))
    t0 = time.time()
    for epoch in range(args.train_epochs):
        for i, batch in enumerate(task.train_stream.epoch(epoch, 0, spe)):
            states, m = step(states, batch, jax.random.fold_in(jax.random.key(args.seed), epoch * spe + i))
            if i % 20 == 0:
                log(f"  step {i}/{spe} ({time.time() - t0:.0f} s)")
        log(f"81 architectures: epoch {epoch + 1}/{args.train_epochs}, mean train loss {float(jnp.mean(m['train_loss'])):.3f}"
            f" ({time.time() - t0:.0f} s)")
    correct = np.zeros(n)
    bs = 500
    for i in range(len(xt) // bs):
        _, c = ev(states, onehot, {"image": xt[i * bs:(i + 1) * bs], "label": yt[i * bs:(i + 1) * bs]})
        correct += np.asarray(c)
    err = 1.0 - correct / (len(xt) // bs * bs)
    return task, combos, err, time.time() - t0


def darts_on_s5(args, table_err, log):
    cfg = s5_config(args, args.search_epochs, args.search_steps)
    cfg.batch_size = args.search_batch_size
    cfg.estimator = args.estimator
    cfg.num_seeds = args.seeds
    cfg.seed = args.seed
    task = search.SearchTask.from_config(cfg)
    workdir = tempfile.mkdtemp(prefix="s5_darts_")
    t0 = time.time()
    search.run_single(cfg, workdir, log=log, task=task)
    elapsed = time.time() - t0
    rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    best = float(np.min(table_err))
    per_epoch = []
    for r in rows:
        idx = [index_of(task.space, g) for g in r["genotype"]]
        per_epoch.append({"epoch": r["epoch"], "arch": idx, "regret": [float(table_err[i] - best) for i in idx],
                          "oneshot_val_err": [1 - v for v in r["val_acc"]]})
    return per_epoch, elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train_epochs", type=int, default=10)
    ap.add_argument("--train_steps", type=int, default=0, help="steps per epoch for the 81 (0: all images)")
    ap.add_argument("--search_epochs", type=int, default=30)
    ap.add_argument("--search_steps", type=int, default=0, help="search steps per epoch (0: the whole weight split)")
    ap.add_argument("--search_batch_size", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--image_size", type=int, default=16)
    ap.add_argument("--C", type=int, default=8)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--estimator", default="first_order", help="the RobustDARTS default (--unrolled off)")
    ap.add_argument("--out", default="/tmp/s5_regret.json")
    args = ap.parse_args()
    log = lambda *a: print(*a, flush=True)
    task, combos, err, t_train = train_all(args, log)
    eye = np.eye(3, dtype=np.float32)
    names = [genotype_lib.derive(task.space, {"normal": eye[[a, b]], "reduce": eye[[c, d]]}) for a, b, c, d in combos]
    order = np.argsort(err)
    log(f"81 architectures trained in {t_train:.0f} s")
    per_epoch, t_search = darts_on_s5(args, err, log)
    short = ("sep3", "skip", "max3")  # S5's op order
    # normal cell's ops on inputs c_{k-2}, c_{k-1} | the reduction cell's
    cell = lambda i: "{} {} | {} {}".format(*(short[o] for o in combos[i]))
    assert all(index_of(task.space, names[i].to_dict()) == i for i in range(81))
    json.dump({"args": vars(args), "test_err": err.tolist(), "cells": [cell(i) for i in range(81)],
               "darts": per_epoch, "time_train_81_s": t_train, "time_search_s": t_search}, open(args.out, "w"))
    print(f"\n81 architectures (normal edges | reduce edges), test error after {args.train_epochs} epochs: best "
          f"{err[order[0]]:.4f} ({cell(order[0])}), median {np.median(err):.4f}, worst {err[order[-1]]:.4f} "
          f"({cell(order[-1])}); five best: " + ", ".join(f"{cell(i)} {err[i]:.4f}" for i in order[:5]))
    print(f"\n| epoch | regret per seed | mean regret | one-shot val error (mean) | derived cells |")
    print("|---|---|---|---|---|")
    for r in per_epoch:
        print(f"| {r['epoch']} | {' '.join(f'{x:.4f}' for x in r['regret'])} | {np.mean(r['regret']):.4f} | "
              f"{np.mean(r['oneshot_val_err']):.4f} | {'; '.join(cell(i) for i in r['arch'])} |")
    print(f"\ncost: 81 architectures {t_train:.0f} s, DARTS ({args.seeds} seeds vmapped, {args.search_epochs} epochs) "
          f"{t_search:.0f} s")


if __name__ == "__main__":
    main()
