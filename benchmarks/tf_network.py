"""Which network should BaLeNAS-TF's proxies score? (``balenas.tf.network``; issue 27 item 7)

The two choices, each a one-hot supernet (one compiled program for every candidate):

* ``search``: the search network's cells (affine-free BatchNorm; DARTS pools followed by an
  affine-free BatchNorm; NAS-Bench-201 convs with bias). On NAS-Bench-201 this is exactly
  the zero-cost-proxy code's ``NAS201Model``, the network whose proxy correlations are
  published.
* ``eval``: the evaluation network's cells (affine BatchNorm, pools without BatchNorm, no
  conv bias): DARTS ``NetworkCIFAR``'s ``EvalCell``; AutoDL's ``InferCell`` on NAS-Bench-201.

For each, the Spearman rank correlation between the proxy score and the architectures'
accuracy in a ground truth:

* ``--stage nb201``: ``--cells`` NAS-Bench-201 cells (the first of the same uniform sample as
  ``benchmarks/balenas_nb201.py``), CIFAR-10 accuracy of the AnalogNAS-Bench table (needs
  the ``nb201`` extra). Synflow as the zero-cost-proxy code (C=16, N=5, float64, all-ones
  1x32x32x3 input, BatchNorm kept only in the ResNet blocks); SNIP on 8 embedded
  Fashion-MNIST training images at 16x16 repeated to 3 channels (training transform),
  as in that benchmark.
* ``--stage s5``: all 81 cells of RobustDARTS's S5 (DARTS macro) against the shipped S5
  ground truth (``jaxdarts/datasets/s5_fashion_mnist.json``: each cell trained as the
  one-hot search network, C=8, 5 cells, 16x16, 3 epochs, 2 seeds) at that network's size:
  Synflow (BatchNorm removed, 1x16x16x1 ones), SNIP and GraSP (64 training images,
  training transform), each with ``--inits`` initialisation seeds (one fresh
  initialisation per cell and seed, the same keys for both networks).

    python benchmarks/tf_network.py --stage all --out_dir /tmp/tf_network   # ~15 min on 2 cores
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

from jaxdarts import compare  # noqa: E402
from jaxdarts import data as data_lib  # noqa: E402
from jaxdarts import genotype as G  # noqa: E402
from jaxdarts import nb201  # noqa: E402
from jaxdarts import proxies  # noqa: E402
from jaxdarts import spaces  # noqa: E402
from jaxdarts import supernet  # noqa: E402

from balenas_nb201 import all_cells, cell_alpha, cell_genotype, spearman  # noqa: E402  (this folder)

NETWORKS = ("search", "eval")


def fmnist_batch(n, side, channels, key):
    x, y = data_lib.load_embedded("train")
    x = data_lib.resize(x[:n], side) if x.shape[1] > side else data_lib.pad_to(x[:n], side)
    x = np.repeat(x, channels, axis=-1) if x.shape[-1] != channels else x
    xb = data_lib.augment(key, jnp.asarray(x), (0.2860,) * channels, (0.3530,) * channels, pad=4, flip=True)
    return {"image": xb, "label": jnp.asarray(y[:n])}


def score_all(scorer, alphas, keys, data, chunk, log, tag):
    """Scores in chunks of one shape (one compile); the last chunk padded by repetition."""
    n = len(keys)
    out = []
    t = time.time()
    for s in range(0, n, chunk):
        idx = list(range(s, min(s + chunk, n)))
        idx = idx + [idx[-1]] * (chunk - len(idx))
        a = jax.tree.map(lambda x: x[np.asarray(idx)], alphas)
        sc = scorer(a, keys[np.asarray(idx)], data)
        out.append(np.asarray(sc)[:min(chunk, n - s)])
        log(f"{tag}: {min(s + chunk, n)}/{n} ({time.time() - t:.0f} s)")
    return np.concatenate(out), time.time() - t


def stage_nb201(args, log):
    idx = np.random.default_rng(0).choice(5 ** 6, 1000, replace=False)[:args.cells]  # balenas_nb201's sample
    digits = all_cells()[idx]
    acc = np.array([nb201.accuracy(cell_genotype(d)) for d in digits])
    alphas = {"normal": jnp.asarray(cell_alpha(digits))}
    keys = jnp.stack([jax.random.fold_in(jax.random.key(42), int(i)) for i in idx])
    batch = fmnist_batch(8, 16, 3, jax.random.key(0))
    out = {}
    for net in NETWORKS:
        model = supernet.Supernet("nb201", 10, C=16, layers=5, track_running_stats=False, affine=net == "eval")
        for proxy, data in (("synflow", (1, 32, 32, 3)), ("snip", batch)):
            scorer = proxies.make_scorer(proxy, model, synflow_bn="nb201_reference")
            sc, secs = score_all(scorer, alphas, keys, data, 50, log, f"nb201 {net} {proxy}")
            if proxy == "synflow":
                sc = proxies.log_scores(sc)
            out[f"{net}/{proxy}"] = {"rho": spearman(sc, acc), "n": len(sc), "seconds": secs}
            log(f"nb201 {net} {proxy}: rho {out[f'{net}/{proxy}']['rho']:.3f}")
    return out


def stage_s5(args, log):
    gt = compare.load_ground_truth("s5_fashion_mnist")
    p = gt.info["protocol"]
    sp = spaces.get("s5")
    archs = compare.space_architectures(sp)
    err = gt.mean[[gt.index(a) for a in archs]]
    alphas = {t: jnp.stack([G.to_alpha(sp, a)[t] for a in archs]) for t in sp.cell_types}
    side = p["image_size"]
    batch = fmnist_batch(p["batch_size"], side, 1, jax.random.key(0))
    out = {}
    for net in NETWORKS:
        model = supernet.Supernet(sp, 10, C=p["C"], layers=p["layers"], track_running_stats=False,
                                  affine=net == "eval")
        for proxy, data in (("synflow", (1, side, side, 1)), ("snip", batch), ("grasp", batch)):
            scorer = proxies.make_scorer(proxy, model, synflow_bn="none")
            rhos, all_scores, secs = [], [], 0.0
            for seed in range(args.inits):
                keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), 28), len(archs))
                sc, s = score_all(scorer, alphas, keys, data, len(archs), log, f"s5 {net} {proxy} init {seed}")
                secs += s
                all_scores.append(sc.tolist())
                rhos.append(spearman(sc, -err))
            out[f"{net}/{proxy}"] = {"rho": rhos, "rho_mean": float(np.mean(rhos)), "n": len(archs),
                                     "seconds": secs, "scores": all_scores}
            log(f"s5 {net} {proxy}: rho {np.round(rhos, 3).tolist()}")
    for proxy in ("synflow", "snip", "grasp"):
        a, b = (np.asarray(out[f"{n}/{proxy}"]["scores"]) for n in NETWORKS)
        out[f"same_scores/{proxy}"] = bool(np.array_equal(a, b))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", default="all", choices=["nb201", "s5", "all"])
    p.add_argument("--out_dir", default="/tmp/tf_network")
    p.add_argument("--cells", type=int, default=200)
    p.add_argument("--inits", type=int, default=3)
    args = p.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    log = lambda m: print(m, flush=True)  # noqa: E731
    path = os.path.join(args.out_dir, "tf_network.json")
    out = json.load(open(path)) if os.path.exists(path) else {}
    for stage, fn in (("s5", stage_s5), ("nb201", stage_nb201)):
        if args.stage in (stage, "all") and stage not in out:
            out[stage] = fn(args, log)
            json.dump(out, open(path, "w"), indent=1)
    lines = ["| space | proxy | search network rho | eval network rho |", "|---|---|---|---|"]
    for stage in ("s5", "nb201"):
        for proxy in ("synflow", "snip", "grasp"):
            r = [out.get(stage, {}).get(f"{n}/{proxy}") for n in NETWORKS]
            if r[0]:
                fmt = lambda x: (f"{x['rho_mean']:.3f} ({', '.join(f'{v:.3f}' for v in x['rho'])})"  # noqa: E731
                                 if "rho_mean" in x else f"{x['rho']:.3f} (n={x['n']})")
                lines.append(f"| {stage} | {proxy} | {fmt(r[0])} | {fmt(r[1])} |")
    print("\n".join(lines))
    with open(os.path.join(args.out_dir, "tf_network.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
