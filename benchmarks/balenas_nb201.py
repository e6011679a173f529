"""BaLeNAS on NAS-Bench-201 at small scale: proxy quality and the Table 2 analogue.

Accuracies come from the AnalogNAS-Bench table (``pip install analog-nasbench==0.1.3``;
CIFAR-10, its authors' own training of all 15,625 cells; :mod:`jaxdarts.nb201`), not from
NAS-Bench-201's own files (not available offline).

Stages (each caches its results in ``--out_dir``, re-running skips what is done):

``proxies``  Synflow of ALL 15,625 cells with the zero-cost-proxy network (one-hot NB201
             supernet, C=16, N=5, conv biases, batch-statistics cells, BN kept in the
             residual blocks only, float64, all-ones 1x32x32x3 input, fresh PyTorch-default
             init per cell), one compiled program; SNIP and GraSP of ``--num_cells`` random
             cells on one batch of 64 embedded Fashion-MNIST training images resized to
             32x32 and repeated to 3 channels (no CIFAR offline), training transform;
             Spearman rank correlation of each with the table's accuracy.
``search``   BaLeNAS (VAdam, 1st order, one sample) and DARTS (1st order, Adam) on NB201 on
             the embedded data (``--seeds`` seeds each as one vmapped seed sweep, C=8, N=1,
             16x16), same budget; stores mu and sigma of every BaLeNAS seed.
``table2``   Zero-cost NAS(K) (K uniform cells, best Synflow) over ``--zc_seeds`` seeds and
             BaLeNAS-TF(K) (K draws from each seed's q(mu, sigma^2), NB201 argmax incl.
             ``none``, deduplicated, best Synflow at the CIFAR shape), K in 10/50/100, plus
             BaLeNAS (argmax mu), DARTS (argmax alpha), random and optimum: mean +- std of
             the table accuracy. Prints a Markdown block for benchmarks/RESULTS.md.

    python benchmarks/balenas_nb201.py --stage all     # ~1 h on 2 CPU cores (see RESULTS.md)
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
from jaxdarts import data as data_lib  # noqa: E402
from jaxdarts import genotype as G  # noqa: E402
from jaxdarts import nb201  # noqa: E402
from jaxdarts import optim  # noqa: E402
from jaxdarts import proxies  # noqa: E402
from jaxdarts import search  # noqa: E402
from jaxdarts import spaces  # noqa: E402
from jaxdarts import supernet  # noqa: E402
from jaxdarts.methods import balenas  # noqa: E402

SP = spaces.get("nb201")
OPS = SP.ops["normal"][0]


def all_cells():
    """All 5^6 cells; index i's base-5 digits (row 0 most significant) are the op columns."""
    idx = np.arange(5 ** 6)
    digits = np.stack([(idx // 5 ** (5 - r)) % 5 for r in range(6)], 1)
    return digits


def cell_alpha(digits):
    return np.eye(5, dtype=np.float32)[digits]  # (K, 6, 5)


def cell_genotype(d):
    return G.Genotype(normal=tuple((OPS[int(k)], inp) for k, (_, inp) in zip(d, SP.edges)),
                      normal_concat=(1, 2, 3), reduce=(), reduce_concat=())


def cell_index(g):
    cols = [OPS.index(op) for op, _ in g.normal]
    return int(sum(c * 5 ** (5 - r) for r, c in enumerate(cols)))


def spearman(a, b):
    ra = np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(float)
    rb = np.argsort(np.argsort(b, kind="stable"), kind="stable").astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def proxy_model():
    return supernet.Supernet("nb201", 10, C=16, layers=5, track_running_stats=False)


class SynflowCache:
    """Synflow (CIFAR shape, the zero-cost-proxy network) of NB201 cells by index, computed
    on demand in chunks and kept on disk (fresh init per cell: key = fold_in(42, index))."""

    def __init__(self, path):
        self.path = path
        self.scores = dict(np.load(path)["data"].tolist()) if os.path.exists(path) else {}
        self.scorer = None
        self.time = 0.0

    def get(self, idx):
        idx = [int(i) for i in idx]
        todo = sorted(set(i for i in idx if i not in self.scores))
        if todo:
            if self.scorer is None:
                self.scorer = proxies.make_scorer("synflow", proxy_model(), synflow_bn="nb201_reference")
            digits = all_cells()
            for s in range(0, len(todo), 64):
                part = todo[s:s + 64]
                part = part + [part[-1]] * (64 - len(part))  # one shape: one compile
                keys = jnp.stack([jax.random.fold_in(jax.random.key(42), i) for i in part])
                t = time.time()
                sc = self.scorer({"normal": jnp.asarray(cell_alpha(digits[part]))}, keys, (1, 32, 32, 3))
                self.time += time.time() - t
                self.scores.update(zip(part, sc.tolist()))
                print(f"synflow: {len(self.scores)} cells scored", flush=True)
            np.savez(self.path, data=np.array(sorted(self.scores.items())))
        return proxies.log_scores(np.array([self.scores[i] for i in idx]))


def stage_proxies(args):
    path = os.path.join(args.out_dir, "proxies.npz")
    have = dict(np.load(path)) if os.path.exists(path) else {}
    digits = all_cells()
    acc = np.array([nb201.accuracy(cell_genotype(d)) for d in digits])
    model = proxy_model()
    rng = np.random.default_rng(0)
    sub = rng.choice(len(digits), args.num_cells, replace=False)
    cache = SynflowCache(os.path.join(args.out_dir, "synflow.npz"))
    t = time.time()
    syn = cache.get(sub)
    syn_time = time.time() - t
    x, y = data_lib.load_embedded("train")
    nb, side = args.data_batch, args.data_size
    x = data_lib.resize(x[:nb], side) if x.shape[1] > side else data_lib.pad_to(x[:nb], side)
    x = np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x
    xb = data_lib.augment(jax.random.key(0), jnp.asarray(x), (0.2860,) * 3, (0.3530,) * 3, pad=4, flip=True)
    batch = {"image": xb, "label": jnp.asarray(y[:nb])}
    for name in ("snip", "grasp"):
        n_dp = args.num_cells_data if name == "snip" else args.num_cells_grasp
        if name in have:
            continue
        t = time.time()
        scorer = proxies.make_scorer(name, model)
        scores = []
        for s in range(0, n_dp, 25):
            d = digits[sub[s:s + 25]]
            keys = jax.random.split(jax.random.fold_in(jax.random.key(7), s), len(d))
            scores.append(scorer({"normal": jnp.asarray(cell_alpha(d))}, keys, batch))
            print(f"{name} {s + len(d)}/{n_dp} {time.time() - t:.0f} s", flush=True)
        have[name] = np.concatenate(scores)
        have[f"{name}_time"] = np.array(time.time() - t)
        np.savez(path, **have)
    out = {"synflow": spearman(syn, acc[sub]), "n_synflow": int(len(sub)),
           "snip": spearman(have["snip"], acc[sub[:len(have["snip"])]]), "n_snip": len(have["snip"]),
           "grasp": spearman(have["grasp"], acc[sub[:len(have["grasp"])]]), "n_grasp": len(have["grasp"]),
           "data_batch": nb, "data_size": side, "synflow_time": syn_time,
           "snip_time": float(have["snip_time"]), "grasp_time": float(have["grasp_time"])}
    print(json.dumps(out, indent=1))
    with open(os.path.join(args.out_dir, "proxies.json"), "w") as f:
        json.dump(out, f)
    return out


def search_config(method, args):
    c = config_lib.base(method)
    c.dataset, c.space = "fashion_mnist", "nb201"
    c.data.image_size, c.data.max_examples = 16, args.max_examples
    c.model.C, c.model.layers = 8, 1
    c.batch_size, c.epochs, c.steps_per_epoch = 32, args.epochs, args.steps
    c.num_seeds, c.progress, c.log_every = args.seeds, "log", 50
    c.eval_batches = 8
    if method == "balenas":
        c.balenas.selection = "argmax"
    return c


def stage_search(args):
    out = {}
    for method in ("balenas", "darts"):
        wd = os.path.join(args.out_dir, f"search_{method}")
        cfg = search_config(method, args)
        task = search.SearchTask.from_config(cfg)
        runner = search.Runner(task, wd, sweep=search.Sweep("seed", tuple(cfg.seed + i for i in range(args.seeds))))
        t = time.time()
        res = runner.run()
        out[method] = {"genotypes": [G.Genotype.from_json(g).to_nb201_str() for g in res["genotypes"]],
                       "time": time.time() - t}
        if method == "balenas":
            st = runner.state
            out[method]["mu"] = np.asarray(st.alpha["normal"]).tolist()
            out[method]["sigma"] = np.asarray(optim.vadam_sigma(st.a_opt)["normal"]).tolist()
    with open(os.path.join(args.out_dir, "search.json"), "w") as f:
        json.dump(out, f)
    return out


def stage_table2(args):
    with open(os.path.join(args.out_dir, "search.json")) as f:
        se = json.load(f)
    cache = SynflowCache(os.path.join(args.out_dir, "synflow.npz"))
    digits = all_cells()
    acc = np.array([nb201.accuracy(cell_genotype(d)) for d in digits])
    rows = {"random (mean of all cells)": [float(acc.mean())], "optimum": [float(acc.max())]}
    draws = {}  # (kind, K, seed) -> cell indices, drawn first so Synflow runs in full chunks
    for K in (10, 50, 100):
        for s in range(args.zc_seeds):
            gs = balenas.uniform_architectures(SP, jax.random.key(1000 + s), K)
            draws[("zc", K, s)] = [cell_index(g) for g in balenas.dedupe(gs)]
        for r, (mu, sig) in enumerate(zip(se["balenas"]["mu"], se["balenas"]["sigma"])):
            gs = balenas.sample_architectures(SP, {"normal": jnp.asarray(mu)}, {"normal": jnp.asarray(sig)},
                                              jax.random.key(2000 + r), K)
            draws[("tf", K, r)] = [cell_index(g) for g in balenas.dedupe(gs)]
    cache.get(sorted({i for idx in draws.values() for i in idx}))
    for K in (10, 50, 100):
        for kind, name in (("zc", f"Zero-cost NAS({K})"), ("tf", f"BaLeNAS-TF({K})")):
            rows[name] = [acc[idx[int(np.argmax(cache.get(idx)))]] for (k, kk, _), idx in draws.items()
                          if k == kind and kk == K]
    uniq = {k: len(v) for k, v in draws.items() if k[0] == "tf"}
    rows["BaLeNAS (argmax mu)"] = [nb201.accuracy(s) for s in se["balenas"]["genotypes"]]
    rows["DARTS (1st order)"] = [nb201.accuracy(s) for s in se["darts"]["genotypes"]]
    lines = ["| method | CIFAR-10 table accuracy (%) mean +- std | runs |", "|---|---|---|"]
    for k, v in rows.items():
        lines.append(f"| {k} | {np.mean(v):.2f} +- {np.std(v):.2f} | {len(v)} |")
    lines.append("")
    lines.append("distinct cells among the BaLeNAS-TF draws (K=10/50/100, per seed): "
                 + ", ".join(str(uniq[("tf", K, r)]) for K in (10, 50, 100) for r in range(args.seeds)))
    lines.append("BaLeNAS cells: " + ", ".join(f"`{s}`" for s in se["balenas"]["genotypes"]))
    lines.append("DARTS cells: " + ", ".join(f"`{s}`" for s in se["darts"]["genotypes"]))
    sig = np.asarray(se["balenas"]["sigma"])
    lines.append(f"sigma after the search: mean {sig.mean():.3f}, min {sig.min():.3f}, max {sig.max():.3f}; "
                 f"search time BaLeNAS {se['balenas']['time']:.0f} s, DARTS {se['darts']['time']:.0f} s "
                 f"({args.seeds} seeds vmapped each)")
    print("\n".join(lines))
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--stage", default="all", choices=["proxies", "search", "table2", "all"])
    p.add_argument("--out_dir", default="/tmp/balenas_nb201")
    p.add_argument("--num_cells", type=int, default=1000)
    p.add_argument("--num_cells_data", type=int, default=1000, help="cells scored by SNIP/GraSP")
    p.add_argument("--num_cells_grasp", type=int, default=1000, help="cells scored by GraSP")
    p.add_argument("--data_batch", type=int, default=64, help="SNIP/GraSP batch (the proxy code: 64)")
    p.add_argument("--data_size", type=int, default=32, help="SNIP/GraSP image side (CIFAR: 32)")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--zc_seeds", type=int, default=10)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--max_examples", type=int, default=5120)
    args = p.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    if args.stage in ("search", "all"):
        stage_search(args)
    if args.stage in ("table2", "all"):
        stage_table2(args)
    if args.stage in ("proxies", "all"):
        stage_proxies(args)


if __name__ == "__main__":
    main()
