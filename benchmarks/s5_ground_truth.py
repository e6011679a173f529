"""Ground truth for RobustDARTS's S5 (81 architectures) on Fashion-MNIST, one unit of work at a time.

Every architecture is trained as its *discrete network* (:mod:`jaxdarts.discrete`: the
search network's macro, C and cells with only the chosen op on each edge, which computes what
the search supernet does at the one-hot alpha; a cell of skips and pools costs a fraction of
one of separable convolutions), several seeds of one cell as one ``vmap``-ed program (seed =
initial weights, batch order and augmentation), on the full Fashion-MNIST training set
(60,000 images, Debian's ``dataset-fashion-mnist``: ``apt-get install dataset-fashion-mnist``)
resized to the search's 16x16, with the search's training transform (crop of the raw image
padded by 2, flip). Test error on the full 10,000-image test set after every epoch.

Each finished ``(cell, seed)`` is one line of ``<out>/units.jsonl`` (its per-epoch test
errors and seconds): re-running the command skips what is there, so the table is built over
several sittings, and a subset (``--cells``) can run first. The summary reports the
seed-to-seed and split-half Spearman correlations over the cells with every seed, whether
the curves have flattened (the mean change of the test error over the last epochs against
the seeds' standard error), and the top group: every cell whose mean is within two
standard errors of the best (a tie, not a ranking).

    python benchmarks/s5_ground_truth.py --epochs 8 --seeds 0 1 2 3 \
        --out benchmarks/results/s5_ground_truth_e8        # resumes; cost per cell in units.jsonl

With ``--write jaxdarts/datasets/s5_fashion_mnist.json`` it writes the table that
``bin/compare.py`` reads (:class:`jaxdarts.compare.GroundTruth`: per architecture its key,
the error of every seed; the protocol, seeds, date, machine, cost and this command); only
when every cell has every seed, or as a *two-tier* table (``--short DIR``): the cells that
decide regret at this (long) protocol, every other cell certified outside the top group by
the short protocol's run in ``DIR`` (:func:`two_tier`). The plan over several sittings::

    # 1. the short tier, all 81 cells (about 2.5 hours on 2 cores)
    python benchmarks/s5_ground_truth.py --epochs 2 --seeds 0 1 --out benchmarks/results/s5_ground_truth_e2
    # 2. the long tier on the short tier's best cells and every cell a method picked
    python benchmarks/s5_ground_truth.py --epochs 8 --seeds 0 1 2 3 --out benchmarks/results/s5_ground_truth_e8 \
        --cells "$(python benchmarks/s5_ground_truth.py --epochs 2 --seeds 0 1 \
                   --out benchmarks/results/s5_ground_truth_e2 --summary_only --print_top 15 | tail -1)"
    # 3. the table (refuses, naming them, while a cell is in neither tier's safe set)
    python benchmarks/s5_ground_truth.py --epochs 8 --seeds 0 1 2 3 --out benchmarks/results/s5_ground_truth_e8 \
        --summary_only --short benchmarks/results/s5_ground_truth_e2 --write jaxdarts/datasets/s5_fashion_mnist.json \
        --figure docs/img/s5_ground_truth.png
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
from jaxdarts import data as data_lib  # noqa: E402
from jaxdarts import discrete  # noqa: E402
from jaxdarts import genotype as genotype_lib  # noqa: E402
from jaxdarts import search  # noqa: E402

CELL_OPS = ("sep3", "skip", "max3")  # S5's op order
OPS = ("sep_conv_3x3", "skip_connect", "max_pool_3x3")


def read_idx(path):
    with gzip.open(path, "rb") as f:
        magic, n = struct.unpack(">II", f.read(8))
        dims = [struct.unpack(">I", f.read(4))[0] for _ in range(magic % 256 - 1)]
        return np.frombuffer(f.read(), np.uint8).reshape([n] + dims)


def full_split(src, split, size):
    """The full Fashion-MNIST ``split`` ('train': 60,000, 't10k': 10,000) resized to ``size``."""
    if not os.path.exists(os.path.join(src, f"{split}-images-idx3-ubyte.gz")):
        raise SystemExit(f"the full Fashion-MNIST is not in {src}; install it: apt-get install dataset-fashion-mnist")
    x = read_idx(os.path.join(src, f"{split}-images-idx3-ubyte.gz"))[..., None]
    y = read_idx(os.path.join(src, f"{split}-labels-idx1-ubyte.gz")).astype(np.int32)
    if size != x.shape[1]:
        x = np.concatenate([data_lib.resize(x[i:i + 5000], size) for i in range(0, len(x), 5000)])
    return x, y


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


def cell_name(combo):
    return "{} {} | {} {}".format(*(CELL_OPS[o] for o in combo))


PROTOCOL_ARGS = ("epochs", "image_size", "C", "layers", "batch_size", "crop_padding", "lr", "train_images")


def cell_config(args, combo, seed):
    """The search config of the S5 ground truth (the DARTS weight optimiser: SGD, lr -> 0.001
    cosine per epoch, momentum 0.9, weight decay 3e-4, clip 5) on the discrete space of ``combo``."""
    _, alphas = architectures()
    i = architectures()[0].index(tuple(combo))
    space = discrete.discrete_space("s5", {t: alphas[t][i] for t in ("normal", "reduce")})
    c = config_lib.base("darts")
    c.dataset, c.space, c.seed = "fashion_mnist", space.name, int(seed)
    c.data.image_size, c.data.crop_padding = args.image_size, args.crop_padding
    c.model.C, c.model.layers = args.C, args.layers
    c.batch_size, c.epochs, c.steps_per_epoch = args.batch_size, args.epochs, 0
    c.optim.lr = args.lr
    return c, space


def train_cell(args, combo, seeds, train, test, log=print):
    """Trains the discrete network of ``combo`` for every seed of ``seeds`` as one vmapped
    program; returns ``(test errors (seeds, epochs), seconds)``."""
    cfg, space = cell_config(args, combo, seeds[0])
    task = search.SearchTask.from_arrays(cfg, train, test, data_lib.info("fashion_mnist"))
    states = jax.tree.map(lambda *x: jnp.stack(x), *[task.init_state(s) for s in seeds])
    w = discrete.unit_weights(space)
    streams = [data_lib.BatchStream(*train, cfg.batch_size, s) for s in seeds]
    spe = streams[0].steps_per_epoch

    def one(state, batch, key):
        return task.weight_update(state, task.preprocess(key, batch, True), weights=w)[0]

    step = jax.jit(jax.vmap(one), donate_argnums=0)
    ev = jax.jit(jax.vmap(lambda st, b: task.eval_step(st, b, w, normalized=True)[1], in_axes=(0, None)))
    keys = [jax.random.key(1000003 * s + 17) for s in seeds]
    xt, yt, bs = test[0], test[1], 500
    errs, t0 = [], time.time()
    for epoch in range(cfg.epochs):
        its = [st.epoch(epoch) for st in streams]
        for i in range(spe):
            bl = [next(it) for it in its]
            batch = {k: np.stack([b[k] for b in bl]) for k in ("image", "label")}
            k = jnp.stack([jax.random.fold_in(kk, epoch * spe + i) for kk in keys])
            states = step(states, batch, k)
        correct = sum(np.asarray(ev(states, {"image": xt[j:j + bs], "label": yt[j:j + bs]}))
                      for j in range(0, len(xt) // bs * bs, bs))
        errs.append(1.0 - correct / (len(xt) // bs * bs))
        log(f"  {cell_name(combo)} seeds {seeds} epoch {epoch + 1}: test error "
            f"{', '.join(f'{e:.4f}' for e in errs[-1])} ({time.time() - t0:.0f} s)")
    return np.stack(errs, 1), time.time() - t0


def read_units(path):
    out = {}
    if os.path.exists(path):
        for line in open(path):
            if line.strip():
                u = json.loads(line)
                out[(tuple(u["combo"]), u["seed"])] = u
    return out


def spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def summarize(units, seeds, log=print):
    """Statistics of the cells that have every seed: ``dict`` (also printed)."""
    combos, _ = architectures()
    have = [c for c in combos if all((c, s) in units for s in seeds)]
    if not have:
        return {"cells": 0}
    e = np.array([[units[(c, s)]["test_err"][-1] for s in seeds] for c in have])  # (cells, seeds)
    curves = np.array([[units[(c, s)]["test_err"] for s in seeds] for c in have])  # (cells, seeds, epochs)
    mean = e.mean(1)
    se = e.std(1, ddof=1) / np.sqrt(len(seeds)) if len(seeds) > 1 else np.zeros(len(have))
    out = {"cells": len(have), "seeds": list(seeds)}
    if len(seeds) > 1:
        out["spearman_seed_pairs"] = [spearman(e[:, i], e[:, j]) for i in range(len(seeds))
                                      for j in range(i + 1, len(seeds))]
    if len(seeds) >= 2:
        out["spearman_split_half"] = spearman(e[:, 0::2].mean(1), e[:, 1::2].mean(1))
    if curves.shape[2] >= 3:  # flattening: mean change per epoch over the last two epochs
        out["last_epochs_change"] = float(np.mean(curves[:, :, -1] - curves[:, :, -3]) / 2)
        out["median_se"] = float(np.median(se))
    order = np.argsort(mean)
    b = order[0]
    gap = mean - mean[b]
    joint = np.sqrt(se ** 2 + se[b] ** 2)
    top = [int(i) for i in order if gap[i] <= 2 * joint[i]]
    out["top_group"] = [cell_name(have[i]) for i in top]
    out["table"] = [{"cell": cell_name(have[i]), "mean": float(mean[i]), "se": float(se[i])} for i in order]
    log(f"{len(have)} cells with seeds {list(seeds)}")
    if "spearman_seed_pairs" in out:
        log(f"Spearman seed pairs: {', '.join(f'{r:.3f}' for r in out['spearman_seed_pairs'])}; split-half "
            f"(seeds {list(seeds[0::2])} vs {list(seeds[1::2])}): {out['spearman_split_half']:.3f}")
    if "last_epochs_change" in out:
        log(f"test error change per epoch over the last two epochs (mean over cells and seeds): "
            f"{out['last_epochs_change']:+.4f}; median standard error of a cell's mean {out['median_se']:.4f}")
    log(f"top group (within 2 standard errors of the best): {len(top)} cells: {', '.join(out['top_group'])}")
    for r, i in enumerate(order[:12]):
        log(f"| {r + 1} | {cell_name(have[i])} | {mean[i]:.4f} | {se[i]:.4f} |")
    return out


def two_tier(units, seeds, short_units, short_seeds, log=print):
    """The two-tier table: ``(errors (len(seeds), 81), notes)``. Cells with every long-tier
    seed take their long-tier errors; every other cell must be *certified* outside the top
    group by the short tier (its short mean more than 2 joint standard errors above the best
    short mean) and takes its short-tier errors plus the median long-minus-short offset of the
    cells measured at both (its seeds repeated to fill the rows). SystemExit naming the cells
    that are neither."""
    combos, _ = architectures()
    long_cells = [c for c in combos if all((c, s) in units for s in seeds)]
    short = {c: np.array([short_units[(c, s)]["test_err"][-1] for s in short_seeds]) for c in combos
             if all((c, s) in short_units for s in short_seeds)}
    missing = [cell_name(c) for c in combos if c not in long_cells and c not in short]
    if missing:
        raise SystemExit(f"--write: {len(missing)} cells have neither tier: {', '.join(missing[:5])} ...")
    sm = {c: v.mean() for c, v in short.items()}
    se = {c: v.std(ddof=1) / np.sqrt(len(v)) for c, v in short.items()}
    best = min(sm, key=sm.get)
    uncertified = [c for c in combos if c not in long_cells
                   and sm[c] - sm[best] <= 2 * np.sqrt(se[c] ** 2 + se[best] ** 2)]
    if uncertified:
        raise SystemExit("--write: not certified outside the top group by the short tier; run them at the long tier: "
                         "--cells " + ",".join(str(combos.index(c)) for c in uncertified))
    both = [c for c in long_cells if c in short]
    offset = float(np.median([np.mean([units[(c, s)]["test_err"][-1] for s in seeds]) - sm[c] for c in both])) \
        if both else 0.0
    e = np.zeros((len(seeds), len(combos)))
    for j, c in enumerate(combos):
        if c in long_cells:
            e[:, j] = [units[(c, s)]["test_err"][-1] for s in seeds]
        else:
            e[:, j] = np.resize(short[c], len(seeds)) + offset
    notes = {"long_tier_cells": [cell_name(c) for c in long_cells], "short_tier_offset": offset,
             "short_tier_seeds": list(short_seeds)}
    log(f"two tiers: {len(long_cells)} cells at the long protocol, {len(combos) - len(long_cells)} certified by "
        f"the short one (offset {offset:+.4f})")
    return e, notes


def top_cells(units, seeds, n):
    """Indices of the ``n`` cells with the lowest mean final error (every seed), best first."""
    combos, _ = architectures()
    have = [(np.mean([units[(c, s)]["test_err"][-1] for s in seeds]), i) for i, c in enumerate(combos)
            if all((c, s) in units for s in seeds)]
    return [i for _, i in sorted(have)[:n]]


def figure(units, seeds, path):
    """Two panels: each cell's mean test error per epoch (flattening), and the two halves
    of the seeds against each other (the split-half ranking)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    combos, _ = architectures()
    have = [c for c in combos if all((c, s) in units for s in seeds)]
    curves = np.array([[units[(c, s)]["test_err"] for s in seeds] for c in have]).mean(1)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    for row in curves:
        ax.plot(np.arange(1, len(row) + 1), row, color="tab:blue", alpha=0.3, lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error (mean over seeds)")
    ax.set_title(f"{len(have)} cells", fontsize=10)
    final = np.array([[units[(c, s)]["test_err"][-1] for s in seeds] for c in have])
    a, b = final[:, 0::2].mean(1), final[:, 1::2].mean(1)
    bx.scatter(a, b, s=12)
    lo, hi = final.min(), final.max()
    bx.plot([lo, hi], [lo, hi], color="gray", lw=0.8, ls=":")
    bx.set_xlabel(f"seeds {list(seeds[0::2])}")
    bx.set_ylabel(f"seeds {list(seeds[1::2])}")
    bx.set_title(f"split half: Spearman {spearman(a, b):.3f}" if len(have) > 2 else "split half", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_table(path, args, seeds, units, short_units=None, short_seeds=()):
    combos, _ = architectures()
    notes = {}
    if short_units is None:
        e = np.array([[units[(c, s)]["test_err"][-1] for c in combos] for s in seeds])
    else:
        e, notes = two_tier(units, seeds, short_units, short_seeds)
    secs = {cell_name(c): float(sum(units[(c, s)]["seconds"] for s in seeds if (c, s) in units)) for c in combos}
    gt = compare.GroundTruth("s5_fashion_mnist", "s5", "fashion_mnist",
                             tuple(compare.arch_key(genotype(c)) for c in combos), e, {
                                 "protocol": {"network": "the discrete network of each cell (jaxdarts.discrete: "
                                              "the search network with the chosen ops only)",
                                              **{k: getattr(args, k) for k in PROTOCOL_ARGS if k != "train_images"},
                                              "train_images": 60000, "train_data": "the full Fashion-MNIST "
                                              "training set (Debian dataset-fashion-mnist), resized",
                                              "optimizer": f"SGD lr {args.lr} -> 0.001 cosine per epoch, momentum "
                                              "0.9, weight decay 3e-4, gradient clip 5 (jaxdarts.config.base)",
                                              "augmentation": f"random crop of the raw image padded by "
                                                              f"{args.crop_padding} (black) + horizontal flip"},
                                 "test_images": 10000, "test_data": "the full Fashion-MNIST test set, resized",
                                 "seeds": [int(s) for s in seeds], "seconds_per_cell": secs, **notes,
                                 "cpu_hours": sum(secs.values()) / 3600,
                                 "date": time.strftime("%Y-%m-%d"),
                                 "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, JAX {jax.__version__}",
                                 "command": "python benchmarks/s5_ground_truth.py --epochs {} --seeds {} --out {} "
                                            "--write {}".format(args.epochs, " ".join(map(str, seeds)), args.out,
                                                                path)})
    with open(path, "w") as f:
        json.dump(gt.to_json(), f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--image_size", type=int, default=16)
    ap.add_argument("--C", type=int, default=8)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--crop_padding", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.025)
    ap.add_argument("--train_images", type=int, default=0, help="0: all 60,000 (fewer: smoke runs)")
    ap.add_argument("--cells", default="", help="comma-separated cell indices 0-80 to run first (default: all)")
    ap.add_argument("--src", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--out", default="benchmarks/results/s5_ground_truth_e8")
    ap.add_argument("--write", default="", help="write the ground-truth table (jaxdarts.compare format) here")
    ap.add_argument("--summary_only", action="store_true")
    ap.add_argument("--short", default="", help="with --write: the short tier's --out (a two-tier table)")
    ap.add_argument("--short_seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--print_top", type=int, default=0, help="print the indices of the N best cells (for --cells)")
    ap.add_argument("--figure", default="", help="write the curves and split-half figure (PNG) here")
    args = ap.parse_args()
    log = lambda *a: print(*a, flush=True)  # noqa: E731
    os.makedirs(args.out, exist_ok=True)
    proto = {k: getattr(args, k) for k in PROTOCOL_ARGS}
    ppath = os.path.join(args.out, "protocol.json")
    if os.path.exists(ppath) and json.load(open(ppath)) != proto:
        raise SystemExit(f"{args.out} holds another protocol ({json.load(open(ppath))}); use another --out")
    json.dump(proto, open(ppath, "w"), indent=1)
    upath = os.path.join(args.out, "units.jsonl")
    units = read_units(upath)
    combos, _ = architectures()
    todo = [int(i) for i in args.cells.split(",") if i] or list(range(len(combos)))
    if not args.summary_only:
        train = full_split(args.src, "train", args.image_size)
        if args.train_images:
            train = (train[0][:args.train_images], train[1][:args.train_images])
        test = full_split(args.src, "t10k", args.image_size)
        for i in todo:
            seeds = [s for s in args.seeds if (combos[i], s) not in units]
            if not seeds:
                continue
            err, secs = train_cell(args, combos[i], seeds, train, test, log)
            with open(upath, "a") as f:
                for s, row in zip(seeds, err):
                    u = {"cell": i, "combo": list(combos[i]), "name": cell_name(combos[i]), "seed": s,
                         "test_err": [float(v) for v in row], "seconds": secs / len(seeds),
                         "date": time.strftime("%Y-%m-%d %H:%M")}
                    f.write(json.dumps(u) + "\n")
                    units[(combos[i], s)] = u
            log(f"cell {i} {cell_name(combos[i])}: {secs:.0f} s for {len(seeds)} seeds")
    summary = summarize(units, args.seeds, log)
    json.dump(summary, open(os.path.join(args.out, "summary.json"), "w"), indent=1)
    if args.print_top:
        print(",".join(map(str, top_cells(units, args.seeds, args.print_top))))
    if args.figure and summary["cells"]:
        figure(units, args.seeds, args.figure)
    if args.write and args.short:
        write_table(args.write, args, args.seeds, units, read_units(os.path.join(args.short, "units.jsonl")),
                    args.short_seeds)
        log(f"wrote {args.write}")
    elif args.write:
        if summary["cells"] != len(combos):
            raise SystemExit(f"--write needs every cell with every seed; {summary['cells']} of {len(combos)} have them")
        write_table(args.write, args, args.seeds, units)
        log(f"wrote {args.write}")


if __name__ == "__main__":
    main()
