"""StacNAS small-scale reproductions on the embedded Fashion-MNIST (results in RESULTS.md),
and the two analyses as scripts.

Stages:

* ``correlation`` (Table 5 analogue): the 8-op DARTS supernet (C=8, 5 cells, 16x16) trained
  one-level (the StacNAS step) for ``--epochs`` x ``--steps``; then, in eval mode over all
  10,000 embedded training images (batches of 250, streamed: bounded memory), each op's
  output before mixing on every edge of the last cell, and the pooled Pearson correlation
  between ops (:func:`jaxdarts.analysis.operator_correlation`). The same at initialisation
  as a control. Reported: the (last cell, first edge) matrix, the mean over the last
  cell's 14 edges, and the within-group (avg-max, sep3-sep5, dil3-dil5) vs cross-group
  pair means, and the groups that average-linkage clustering of the mean matrix forms at
  ``--group_threshold`` (:func:`jaxdarts.analysis.group_ops`; the paper's groups are the
  default of the method).
* ``confusion`` (Table 6 analogue): stage-1 supernets of 5, 8, 11, 14 cells and a stage-2
  supernet (20 cells in the paper; ``--stage2_layers`` here), C=8, 16x16, each trained
  one-level for ``--epochs`` x ``--steps``; then at the fixed weights 10 draws of m = 10
  mini-batches (batch 32, training-mode BN, alpha fixed), zeta of Eq. 7 per draw
  (:func:`jaxdarts.analysis.gradient_confusion`, the 10 gradients as one vmap); reported
  mean zeta, parameters M (millions) and mean / M (Eq. 8).
* ``quick``: ``configs/stacnas.py:quick`` end to end (both stages) with its wall time.

    python benchmarks/stacnas.py --stage all --out_dir /tmp/stacnas_bench   # ~30 min on 2 cores
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxdarts import analysis, config as config_lib  # noqa: E402
from jaxdarts import data as data_lib  # noqa: E402
from jaxdarts import search, spaces, supernet  # noqa: E402
from jaxdarts.methods import stacnas  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PAIRS_WITHIN = (("avg_pool_3x3", "max_pool_3x3"), ("sep_conv_3x3", "sep_conv_5x5"), ("dil_conv_3x3", "dil_conv_5x5"))
SIX = ("max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")


def small_config(space, layers, args):
    c = config_lib.base("stacnas")
    c.dataset, c.space = "fashion_mnist", space
    c.data.image_size = 16
    c.model.C, c.model.layers = 8, layers
    c.batch_size, c.epochs, c.steps_per_epoch = 32, args.epochs, args.steps
    c.eval_batches, c.progress, c.log_every = 4, "log", 50
    return c


def train(cfg, workdir):
    task = search.SearchTask.from_config(cfg)
    runner = search.Runner(task, workdir, log=lambda *_: None)
    t = time.time()
    runner.run()
    return task, runner.state, time.time() - t


# ------------------------------------------------------------ correlation
def stage_correlation(args):
    cfg = small_config("darts", 5, args)
    task, state, secs = train(cfg, os.path.join(args.out_dir, "corr_search"))
    x, _ = data_lib.load_embedded("train")
    x = data_lib.resize(x, 16) if x.shape[1] > 16 else x
    batches = [data_lib.normalize(jnp.asarray(x[i:i + 250]), task.ds_info.mean, task.ds_info.std)
               for i in range(0, len(x), 250)]
    ops = spaces.get("darts").padded_ops("normal")[0]
    idx = [ops.index(o) for o in SIX]
    last = cfg.model.layers - 1
    out = {"train_seconds": secs, "images": int(len(x)), "ops": list(SIX)}
    init = task.init_state()
    for name, st in (("trained", state), ("init", init)):
        t = time.time()
        variables = {"params": st.params, "batch_stats": st.batch_stats}
        corr = analysis.operator_correlation(task.model, variables, batches, st.alpha, last, range(14))
        mats = np.stack([corr[e][np.ix_(idx, idx)] for e in range(14)])
        mean = mats.mean(0)
        within = [mean[SIX.index(a), SIX.index(b)] for a, b in PAIRS_WITHIN]
        cross = [mean[i, j] for i in range(6) for j in range(i + 1, 6)
                 if (SIX[i], SIX[j]) not in PAIRS_WITHIN]
        out[name] = {"first_edge": mats[0].tolist(), "mean": mean.tolist(), "within": within,
                     "groups": analysis.group_ops(mean, SIX, threshold=args.group_threshold),
                     "cross_mean": float(np.mean(cross)), "cross_min": float(np.min(cross)),
                     "cross_max": float(np.max(cross)), "seconds": time.time() - t}
        print(name, json.dumps({k: v for k, v in out[name].items() if k not in ("first_edge", "mean")}), flush=True)
    json.dump(out, open(os.path.join(args.out_dir, "correlation.json"), "w"))
    short = ["max", "avg", "sep3", "sep5", "dil3", "dil5"]
    lines = []
    for name in ("trained", "init"):
        m = np.array(out[name]["mean"])
        lines += [f"{name} (mean over the 14 edges of the last cell):", "", "| | " + " | ".join(short) + " |",
                  "|---|" + "---|" * 6]
        lines += [f"| {short[i]} | " + " | ".join(f"{m[i, j]:.2f}" for j in range(6)) + " |" for i in range(6)]
        o = out[name]
        lines += ["", f"within-group avg-max {o['within'][0]:.2f}, sep3-sep5 {o['within'][1]:.2f}, dil3-dil5 "
                      f"{o['within'][2]:.2f}; cross-group mean {o['cross_mean']:.2f} (min {o['cross_min']:.2f}, "
                      f"max {o['cross_max']:.2f}); hierarchical groups at rho >= {args.group_threshold}: "
                      f"{o['groups']}", ""]
    print("\n".join(lines), flush=True)
    open(os.path.join(args.out_dir, "correlation.md"), "w").write("\n".join(lines) + "\n")


# -------------------------------------------------------------- confusion
def confusion_of(task, state, draws=10, m=10, seed=0):
    stream = task.train_stream

    def loss(params, batch):
        return task.train_loss_terms(params, state.batch_stats, state.alpha, batch)[0]

    @jax.jit
    def zeta(params, images, labels):
        b = jax.vmap(lambda i, l: task.preprocess(jax.random.key(0), {"image": i, "label": l}, False))(images, labels)
        return analysis.gradient_confusion(loss, params, b)

    rng = np.random.default_rng(seed)
    zs = []
    for _ in range(draws):
        steps = rng.choice(stream.steps_per_epoch, m, replace=False)
        bs = [stream.batch(int(rng.integers(100)), int(s)) for s in steps]
        zs.append(float(zeta(state.params, np.stack([b["image"] for b in bs]), np.stack([b["label"] for b in bs]))))
    return zs


def stage_confusion(args):
    path = os.path.join(args.out_dir, "confusion.json")
    out = json.load(open(path)) if os.path.exists(path) else {}
    runs = [(f"stage1_{L}cell", "stacnas_stage1", L) for L in (5, 8, 11, 14)]
    for name, space, L in runs + [(f"stage2_{args.stage2_layers}cell", None, args.stage2_layers)]:
        if name in out:
            continue
        if space is None:  # stage 2 from the 14-cell stage-1 search's groups
            wd1 = os.path.join(args.out_dir, "conf_stage1_14cell")
            c1 = small_config("stacnas_stage1", 14, args)
            t1 = search.SearchTask.from_config(c1)
            r1 = search.Runner(t1, wd1, log=lambda *_: None)
            r1.restore_or_init()
            groups = stacnas.activated_groups(t1.space, jax.device_get(r1.state.alpha))
            space = stacnas.stage2_space(stacnas.stage2_ops(groups)).name
        t = time.time()
        task, state, secs = train(small_config(space, L, args), os.path.join(args.out_dir, f"conf_{name}"))
        zs = confusion_of(task, state)
        M = supernet.count_params(state.params) / 1e6
        out[name] = {"zeta": zs, "mean": float(np.mean(zs)), "M": M, "confusion": float(np.mean(zs) / M),
                     "train_seconds": secs, "seconds": time.time() - t}
        print(name, json.dumps({k: v for k, v in out[name].items() if k != "zeta"}), flush=True)
        json.dump(out, open(path, "w"))
    lines = ["| supernet | params M (millions) | mean zeta | mean zeta / M (Eq. 8) |", "|---|---|---|---|"]
    lines += [f"| {n} | {r['M']:.3f} | {r['mean']:.4f} | {r['confusion']:.3f} |" for n, r in out.items()]
    print("\n".join(lines), flush=True)
    open(os.path.join(args.out_dir, "confusion.md"), "w").write("\n".join(lines) + "\n")


# ------------------------------------------------------------------ quick
def stage_quick(args):
    wd = os.path.join(args.out_dir, "quick")
    t = time.time()
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bin", "search.py"), "--config",
                        os.path.join(ROOT, "configs", "stacnas.py:quick"), "--workdir", wd, "--config.progress=log"],
                       capture_output=True, text=True)
    secs = time.time() - t
    print(r.stdout[-3000:], r.stderr[-2000:], flush=True)
    out = json.load(open(os.path.join(wd, "genotype.json")))
    line = f"quick two-stage search: {secs:.0f} s wall; genotype {out.get('genotype_str', out['genotype'])}"
    print(line, flush=True)
    open(os.path.join(args.out_dir, "quick.md"), "w").write(line + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", default="all", choices=["correlation", "confusion", "quick", "all"])
    p.add_argument("--out_dir", default="/tmp/stacnas_bench")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--stage2_layers", type=int, default=8)
    p.add_argument("--group_threshold", type=float, default=0.2, help="average-linkage correlation to merge ops")
    args = p.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    for stage in (("quick", "correlation", "confusion") if args.stage == "all" else (args.stage,)):
        {"correlation": stage_correlation, "confusion": stage_confusion, "quick": stage_quick}[stage](args)


if __name__ == "__main__":
    main()
