"""Ground truth for RobustDARTS's S5 (81 architectures) on Fashion-MNIST: how stable is the ranking?

Issue 28's first step, measured before a protocol is fixed: every architecture trained with
one protocol (the search network at its one-hot alpha, as ``benchmarks/s5_regret.py``: the
discrete cell with the search ops; C, cells, image size as the S5 search), once per seed
(seed = initial weights and batch order), as ONE vmapped program over the 81 one-hot
alphas; test error on the full 10,000-image Fashion-MNIST test set (Debian's
``dataset-fashion-mnist``: ``apt-get install dataset-fashion-mnist``), resized like the
training images. Writes a JSON per seed as it finishes (``--out_dir``), then the mean, the
standard deviation over seeds, the binomial standard error of each error and the Spearman
correlation between the seeds' rankings.

    python benchmarks/s5_ground_truth.py --epochs 1 --seeds 2 3   # ~30 min on 2 CPU cores (13 min per seed-epoch)

With ``--write jaxdarts/datasets/s5_fashion_mnist.json`` it writes the table that
``bin/compare.py`` reads (:class:`jaxdarts.compare.GroundTruth`: per architecture its key,
the error of every seed, mean and std; the protocol, seeds, date, machine and this command)
from the seeds' JSON files in ``--out_dir``. The shipped table::

    python benchmarks/s5_ground_truth.py --epochs 3 --seeds 2 3 --out_dir /tmp/gt_e3 \
        --write jaxdarts/datasets/s5_fashion_mnist.json
"""

import argparse
import gzip
import json
import os
import platform
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxdarts import compare  # noqa: E402
from jaxdarts import config as config_lib  # noqa: E402
from jaxdarts import genotype as genotype_lib  # noqa: E402
from jaxdarts import data as data_lib  # noqa: E402
from jaxdarts import search  # noqa: E402

CELL_OPS = ("sep3", "skip", "max3")  # S5's op order
OPS = ("sep_conv_3x3", "skip_connect", "max_pool_3x3")


def read_idx(path):
    with gzip.open(path, "rb") as f:
        magic, n = struct.unpack(">II", f.read(8))
        dims = [struct.unpack(">I", f.read(4))[0] for _ in range(magic % 256 - 1)]
        return np.frombuffer(f.read(), np.uint8).reshape([n] + dims)


def full_test_set(src, size):
    x = read_idx(os.path.join(src, "t10k-images-idx3-ubyte.gz"))[..., None]
    y = read_idx(os.path.join(src, "t10k-labels-idx1-ubyte.gz")).astype(np.int32)
    return (data_lib.resize(x, size) if size != x.shape[1] else x), y


def architectures():
    """The 81 one-hot alphas, index = ravel(normal edge 0, normal edge 1, reduce edge 0, reduce edge 1)."""
    eye = np.eye(3, dtype=np.float32)
    combos = [(a, b, c, d) for a in range(3) for b in range(3) for c in range(3) for d in range(3)]
    return combos, {"normal": np.stack([eye[[a, b]] for a, b, _, _ in combos]),
                    "reduce": np.stack([eye[[c, d]] for _, _, c, d in combos])}


def genotype(combo):
    """The genotype of ``combo`` (S5: node 2 takes c_{k-2} and c_{k-1} through the chosen ops)."""
    ops = [OPS[o] for o in combo]
    return genotype_lib.Genotype(normal=((ops[0], 0), (ops[1], 1)), normal_concat=(2,),
                                 reduce=((ops[2], 0), (ops[3], 1)), reduce_concat=(2,))


def write_table(path, args, seeds, errs, secs, n_test):
    combos, _ = architectures()
    e = np.stack([errs[s] for s in seeds])
    gt = compare.GroundTruth("s5_fashion_mnist", "s5", "fashion_mnist",
                             tuple(compare.arch_key(genotype(c)) for c in combos), e, {
                                 "protocol": {"network": "the search supernet at the one-hot alpha (the discrete cell)",
                                              "C": args.C, "layers": args.layers, "image_size": args.image_size,
                                              "batch_size": args.batch_size, "epochs": args.epochs,
                                              "train_images": 10000, "train_data": "the embedded Fashion-MNIST "
                                              "subset, both search splits (jaxdarts/datasets/fashion_mnist_subset.npz)",
                                              "optimizer": "SGD lr 0.025 -> 0.001 cosine per epoch, momentum 0.9, "
                                              "weight decay 3e-4, gradient clip 5 (jaxdarts.config.base)",
                                              "augmentation": "random crop (padding) + horizontal flip"},
                                 "test_images": int(n_test), "test_data": "the full Fashion-MNIST test set (Debian "
                                 "dataset-fashion-mnist), resized like the training images",
                                 "seeds": [int(s) for s in seeds], "seconds_per_seed": secs,
                                 "date": time.strftime("%Y-%m-%d"),
                                 "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, JAX {jax.__version__}",
                                 "command": "python benchmarks/s5_ground_truth.py --epochs {} --seeds {} --write {}"
                                            .format(args.epochs, " ".join(map(str, seeds)), path)})
    with open(path, "w") as f:
        json.dump(gt.to_json(), f, indent=1)
        f.write("\n")


def cell_name(combo):
    return "{} {} | {} {}".format(*(CELL_OPS[o] for o in combo))


def train_seed(args, seed, test, log):
    (xw, yw), (xa, ya) = data_lib.load_search_data("fashion_mnist", image_size=args.image_size)
    train = (np.concatenate([xw, xa]), np.concatenate([yw, ya]))
    c = config_lib.base("darts")
    c.dataset, c.space, c.seed = "fashion_mnist", "s5", seed
    c.data.image_size, c.model.C, c.model.layers = args.image_size, args.C, args.layers
    c.batch_size, c.epochs, c.steps_per_epoch = args.batch_size, args.epochs, args.steps
    task = search.SearchTask.from_arrays(c, train, test, data_lib.info("fashion_mnist"))
    combos, alphas = architectures()
    n = len(combos)
    states = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), task.init_state())
    onehot = jax.tree.map(jnp.asarray, alphas)
    spe = task.steps_per_epoch

    def step(states, batch, key):
        b = task.preprocess(key, batch, True)
        return jax.vmap(lambda s, w: task.weight_update(s, b, weights=w))(states, onehot)

    step = jax.jit(step, donate_argnums=0)
    ev = jax.jit(jax.vmap(lambda s, w, b: task.eval_step(s, b, w, normalized=True), in_axes=(0, 0, None)))
    t0 = time.time()
    for epoch in range(args.epochs):
        for i, batch in enumerate(task.train_stream.epoch(epoch, 0, spe)):
            states, m = step(states, batch, jax.random.fold_in(jax.random.key(seed), epoch * spe + i))
            if i % 50 == 0:
                log(f"  seed {seed} epoch {epoch + 1} step {i}/{spe} ({time.time() - t0:.0f} s)")
    xt, yt = test
    correct, bs = np.zeros(n), 500
    for i in range(len(xt) // bs):
        _, cnt = ev(states, onehot, {"image": xt[i * bs:(i + 1) * bs], "label": yt[i * bs:(i + 1) * bs]})
        correct += np.asarray(cnt)
    err = 1.0 - correct / (len(xt) // bs * bs)
    return combos, err, time.time() - t0, spe


def spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--image_size", type=int, default=16)
    ap.add_argument("--C", type=int, default=8)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=0, help="steps per epoch (0: every training image)")
    ap.add_argument("--test_src", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--out_dir", default="/tmp/s5_ground_truth")
    ap.add_argument("--write", default="", help="write the ground-truth table (jaxdarts.compare format) here")
    args = ap.parse_args()
    log = lambda *a: print(*a, flush=True)  # noqa: E731
    os.makedirs(args.out_dir, exist_ok=True)
    test = full_test_set(args.test_src, args.image_size)
    errs, secs = {}, {}
    for seed in args.seeds:
        path = os.path.join(args.out_dir, f"seed_{seed}.json")
        if os.path.exists(path):
            d = json.load(open(path))
            errs[seed], secs[seed] = np.asarray(d["test_err"]), d["seconds"]
            continue
        combos, err, secs_, spe = train_seed(args, seed, test, log)
        json.dump({"args": vars(args), "seed": seed, "steps_per_epoch": spe, "seconds": secs_,
                   "cells": [cell_name(c) for c in combos], "test_err": err.tolist()}, open(path, "w"))
        log(f"seed {seed}: {secs_:.0f} s; best {err.min():.4f}, median {np.median(err):.4f}, worst {err.max():.4f}")
        errs[seed], secs[seed] = err, secs_
    combos, _ = architectures()
    if args.write:
        write_table(args.write, args, args.seeds, errs, [secs[s] for s in args.seeds], len(test[1]))
        log(f"wrote {args.write}")
    e = np.stack([errs[s] for s in args.seeds])
    mean, std = e.mean(0), e.std(0, ddof=1) if len(e) > 1 else np.zeros(e.shape[1])
    se = np.sqrt(mean * (1 - mean) / len(test[1]))
    order = np.argsort(mean)
    print(f"\n{len(args.seeds)} seeds x {args.epochs} epochs, test on {len(test[1])} images")
    if len(e) > 1:
        rhos = [spearman(e[i], e[j]) for i in range(len(e)) for j in range(i + 1, len(e))]
        top = set(np.argsort(e[0])[:10])
        print(f"Spearman between seeds: {', '.join(f'{r:.3f}' for r in rhos)}; top-10 overlap of the first two "
              f"seeds: {len(top & set(np.argsort(e[1])[:10]))}/10; median std over seeds {np.median(std):.4f}; "
              f"binomial SE of one error ~{np.median(se):.4f}")
    print("\n| rank | cell (normal c_{k-2} c_{k-1} | reduce) | mean test error | std over seeds |")
    print("|---|---|---|---|")
    for r, i in enumerate(order[:10]):
        print(f"| {r + 1} | {cell_name(combos[i])} | {mean[i]:.4f} | {std[i]:.4f} |")
    print(f"| ... | median | {np.median(mean):.4f} | |")
    print(f"| 81 | {cell_name(combos[order[-1]])} | {mean[order[-1]]:.4f} | {std[order[-1]]:.4f} |")


if __name__ == "__main__":
    main()
