"""Every method on equal terms against a ground truth: the leaderboard of ``bin/compare.py``.

A comparison (``configs/compare.py``) fixes one *protocol* (space, dataset, image size,
network size, batch size, epochs and steps per epoch) and a list of seeds, and runs

* every registered method (:func:`jaxdarts.methods.names`; ``methods=()`` in the config),
  each with its own defaults: the shipped config file whose ``:quick`` variant runs it
  (:func:`method_config_files`, ``get_config('')``: the reference code's settings), with
  the protocol's fields set on top (:func:`method_config`). A method's weight-only
  warm-up (``arch_start_epoch``) is scaled by the budget (its own epochs -> the
  protocol's), so MS-DARTS's 5 of 50 epochs become 1 of 10. Per-epoch analyses are off
  (``hessian_every=0``): they do not change a search. Each run is an ordinary workdir
  (``runs/<method>/seed_<s>``) of the method's own program (:func:`jaxdarts.search.run`),
  so the command resumes, and a method registered later joins without an edit here. A
  method that cannot search the protocol's space (StacNAS needs a space with ``none``)
  is listed as not applicable with its one-line reason. ``variants`` adds
  ``method:variant`` entries: a variant of the method's config file run through its own run
  driver (``robustdarts:es`` DARTS-ES, ``robustdarts:dp`` R-DARTS, ``stacnas:one_stage``
  StacNAS's one-level stage alone, which runs on S5).
* two baselines:

  - ``random``: random search with the ground truth's own protocol, as costly as one
    search. Cost is counted in images through a network: one search epoch of the
    first-order DARTS step passes ``2 * steps * batch`` images (weight step and
    architecture step, forward and backward) through a supernet that computes ``|O|``
    ops per edge (``|O|`` discrete networks' worth), and training one architecture for
    the ground truth passes ``epochs_gt * n_train`` images through one discrete network,
    so after search epoch ``e`` (0-based) random search has trained
    ``K_e = max(1, floor(2 |O| (e + 1) steps batch / (epochs_gt n_train)))``
    architectures (:func:`random_search_budget`). It draws them uniformly without
    replacement (one permutation per seed, the first ``K_e``), keeps the one with the
    lowest error *of one ground-truth seed* (what its own training would measure; seed
    ``s`` uses ground-truth seed ``s mod n``) and is judged by the mean, like every
    method. :func:`expected_random_regret` is its closed-form expectation over draws.
  - ``synflow``: Zero-cost NAS (Abdelfattah et al., 2021) with Synflow: every
    architecture of the space scored once on the protocol's one-hot supernet
    (:mod:`jaxdarts.proxies`, BatchNorm removed, a fresh initialisation per
    architecture from the seed), the best score taken; it costs seconds, so its regret is
    the same at every epoch.

After every epoch each run's derived architecture (``metrics.jsonl``: the argmax of the
epoch) is looked up in the ground truth (:class:`GroundTruth`: mean test error of every
architecture of the space over its seeds): *regret* = its mean test error minus the best
mean test error of the space. Per method: the regret per epoch (mean, std over seeds),
the final architecture (the method's output, ``genotype.json``: BaLeNAS-TF's selection
where it selects) and the best-seen one (the lowest regret over its epochs: an oracle no
search has, as RobustDARTS Figure 2). :func:`run` writes ``leaderboard.json``,
``leaderboard.md``, ``leaderboard.html`` (the table, regret per epoch, the cells) and
``leaderboard.png`` (the regret figure).

Ground truths ship in ``jaxdarts/datasets/<name>.json`` (:data:`GROUND_TRUTHS`; each
records its protocol, seeds, date and the command that regenerates it:
``benchmarks/s5_ground_truth.py``).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import html
import itertools
import json
import math
import os
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxdarts import bootstrap
from jaxdarts import cell_diagram
from jaxdarts import config as config_lib
from jaxdarts import data as data_lib
from jaxdarts import genotype as genotype_lib
from jaxdarts import io as io_lib
from jaxdarts import kernels
from jaxdarts import registry as methods_lib  # finds methods by name; imports none
from jaxdarts import nb201
from jaxdarts import proxies
from jaxdarts import search
from jaxdarts import spaces as spaces_lib
from jaxdarts import supernet as supernet_lib
from jaxdarts.contract import ConfigError, check_choice, check_positive

DATASETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "datasets")
GROUND_TRUTHS = ("s5_fashion_mnist", "nb201")
"""Ground truths by name: ``jaxdarts/datasets/<name>.json`` shipped with the package, and
``nb201``: the optional NAS-Bench-201 accuracy table (:mod:`jaxdarts.nb201`, CIFAR-10 test
accuracy of all 15,625 cells; ``pip install analog-nasbench``)."""
BASELINES = ("random", "synflow")
PROTOCOL_FIELDS = ("dataset", "space", "data.image_size", "data.max_examples", "model.C", "model.layers",
                   "batch_size", "epochs", "steps_per_epoch", "eval_batches")
"""Config fields every method's run takes from the comparison's protocol (equal terms)."""

OPTIONAL_PROTOCOL_FIELDS = ("model.depthwise", "data.crop_padding")
"""Fields a protocol may set for every method: the lowering (``protocol.model_depthwise``,
numerically equal either way, so a speed choice: the ``tiny`` smoke protocol compiles the
compact ``'conv'`` lowering) and the crop padding (``protocol.data_crop_padding``: 2 for the
16-pixel protocols, CIFAR's 4 of 32 pixels in proportion)."""


# ------------------------------------------------------------------ ground truth
def arch_key(genotype) -> str:
    """The architecture as a string, the same for every listing order of a node's inputs:
    ``'normal: op@input ... | reduce: op@input ...'`` (:meth:`Genotype.canonical`)."""
    g = genotype_lib.Genotype.from_json(genotype) if isinstance(genotype, (str, dict)) else genotype
    g = g.canonical()
    cell = lambda t: " ".join(f"{op}@{i}" for op, i in g.all_genes(t))  # noqa: E731
    return f"normal: {cell('normal')} | reduce: {cell('reduce')}"


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """Test error of every architecture of a space, per ground-truth seed.

    ``keys[i]`` (:func:`arch_key`) has errors ``errors[:, i]`` (one row per seed);
    ``info`` holds the rest of the file (protocol, date, command, test images)."""

    name: str
    space: str
    dataset: str
    keys: tuple
    errors: np.ndarray
    info: dict
    key_format: str = "genotype"  # genotype: arch_key; nb201: NASLib op indices "i,i,i,i,i,i"

    def key(self, genotype) -> str:
        if self.key_format == "nb201":
            g = genotype_lib.Genotype.from_json(genotype) if isinstance(genotype, dict) else genotype
            return ",".join(map(str, nb201.naslib_op_indices(g)))
        return arch_key(genotype)

    @property
    def mean(self) -> np.ndarray:
        return self.errors.mean(0)

    @property
    def std(self) -> np.ndarray:
        return self.errors.std(0, ddof=1) if len(self.errors) > 1 else np.zeros(self.errors.shape[1])

    @property
    def best(self) -> float:
        return float(self.mean.min())

    def index(self, genotype) -> int:
        """Position of ``genotype`` in the table; KeyError naming it when absent."""
        if "_index" not in self.__dict__:
            self.__dict__["_index"] = {k: i for i, k in enumerate(self.keys)}
        key = self.key(genotype)
        try:
            return self.__dict__["_index"][key]
        except KeyError:
            raise KeyError(f"architecture {key!r} is not in ground truth {self.name!r}") from None

    @property
    def reference(self) -> str:
        """How :attr:`regrets` are measured (:mod:`jaxdarts.bootstrap`): against the best cell
        chosen on held-out ground-truth seeds (``'cross_fitted'``, two or more seeds) or
        against the minimum mean (``'min_mean'``, one seed)."""
        return "cross_fitted" if len(self.errors) >= 2 else "min_mean"

    @property
    def regrets(self) -> np.ndarray:
        if "_regrets" not in self.__dict__:
            self.__dict__["_regrets"] = bootstrap.regrets(self.errors, self.reference)
        return self.__dict__["_regrets"]

    def to_json(self) -> dict:
        return dict(self.info, name=self.name, space=self.space, dataset=self.dataset,
                    architectures=[{"key": k, "test_err": [float(e) for e in self.errors[:, i]],
                                    "test_err_mean": float(self.mean[i]), "test_err_std": float(self.std[i])}
                                   for i, k in enumerate(self.keys)])


def nb201_ground_truth() -> GroundTruth:
    """The NAS-Bench-201 table (:func:`jaxdarts.nb201.table`) as a ground truth: test error
    ``1 - accuracy / 100`` of one training per cell; TableNotInstalledError without it."""
    table = nb201.table()
    keys = tuple(",".join(map(str, k)) for k in table)
    errors = np.asarray([[1.0 - a / 100.0 for a in table.values()]], np.float64)
    info = {"protocol": {"epochs": 200, "train_images": 50000, "network": "NAS-Bench-201 (C16, N5) as trained by "
                         "AnalogNAS-Bench's authors (full precision)"},
            "source": "analog-nasbench 0.1.3 baseline_accuracy (jaxdarts.nb201)", "seeds": [None]}
    return GroundTruth("nb201", "nb201", "cifar10", keys, errors, info, key_format="nb201")


def ground_truth_path(name: str) -> str:
    """The file of a shipped ground truth (``name`` in :data:`GROUND_TRUTHS`; None for
    ``nb201``, which is read from its package) or ``name`` itself when it is a path to a
    ``.json`` file."""
    if name.endswith(".json"):
        if not os.path.exists(name):
            raise FileNotFoundError(f"ground truth file {name!r} not found")
        return name
    if name not in GROUND_TRUTHS:
        raise ConfigError(f"config.ground_truth={name!r} is not accepted; accepted: {', '.join(GROUND_TRUTHS)}, "
                          "or a path to a .json table")
    return None if name == "nb201" else os.path.join(DATASETS_DIR, name + ".json")


def load_ground_truth(name: str) -> GroundTruth:
    """A ground-truth table (:func:`ground_truth_path`, or ``'nb201'``)."""
    if name == "nb201":
        return nb201_ground_truth()
    d = io_lib.read_json(ground_truth_path(name))
    archs = d.pop("architectures")
    errors = np.asarray([a["test_err"] for a in archs], np.float64).T
    gt = GroundTruth(d.pop("name", os.path.basename(name)), d.pop("space"), d.pop("dataset"),
                     tuple(a["key"] for a in archs), errors, d)
    if len(set(gt.keys)) != len(gt.keys):
        raise ValueError(f"ground truth {gt.name!r} lists an architecture twice")
    return gt


def space_size(space) -> int:
    """How many architectures :func:`space_architectures` lists."""
    space = spaces_lib.get(space)
    return math.prod(len(ops) for t in space.cell_types for ops in space.ops[t])


def space_architectures(space, indices=None) -> list[genotype_lib.Genotype]:
    """Every architecture of a space whose derivation keeps all edges (RobustDARTS's S5: the
    op of each fixed edge), as genotypes, in ``itertools.product`` order of the edges'
    op indices (normal edges, then reduce edges); with ``indices``, only those positions
    of that order (a sample of a large space, without listing the rest)."""
    space = spaces_lib.get(space)
    per_edge = [(t, e, space.ops[t][e]) for t in space.cell_types for e in range(len(space.ops[t]))]
    sizes = [len(ops) for _, _, ops in per_edge]
    choices = (itertools.product(*map(range, sizes)) if indices is None
               else (np.unravel_index(int(i), sizes) for i in indices))
    out = []
    for choice in choices:
        alpha = {t: np.zeros(np.shape(space.mask(t)), np.float32) for t in space.cell_types}
        for (t, e, _), c in zip(per_edge, choice):
            alpha[t][e, c] = 1.0
        out.append(genotype_lib.derive(space, alpha, normalized=True))
    return out


# ------------------------------------------------------------------ budgets and baselines
def random_search_budget(space, steps_per_epoch: int, batch_size: int, epoch: int, gt_epochs: float,
                         gt_train_images: int) -> int:
    """Architectures random search trains (ground-truth protocol) for the cost of search
    epochs ``0..epoch`` of first-order DARTS (see the module docstring)."""
    space = spaces_lib.get(space)
    ops = max(len(o) for t in space.cell_types for o in space.ops[t])
    search_images = 2 * ops * (epoch + 1) * steps_per_epoch * batch_size
    return max(1, int(search_images // (gt_epochs * gt_train_images)))


def random_search_choice(select_err: np.ndarray, k: int, seed: int) -> int:
    """Index chosen by random search: the lowest ``select_err`` among the first ``k`` of a
    uniform permutation drawn from ``seed`` (ties: the earlier draw)."""
    order = np.random.default_rng(seed).permutation(len(select_err))[:k]
    return int(order[np.argmin(select_err[order])])


def expected_random_regret(select_err: np.ndarray, regrets: np.ndarray, k: int) -> float:
    """Closed-form expected regret of :func:`random_search_choice` over its draws: with the
    architectures sorted by ``select_err`` (ties broken at random), the one ranked ``i``
    (1-based) of ``n`` is chosen with probability ``C(n - i, k - 1) / C(n, k)``."""
    n = len(select_err)
    k = min(k, n)
    err, reg = np.asarray(select_err, np.float64), np.asarray(regrets, np.float64)
    total = 0.0
    for v in np.unique(err):  # tied selection scores share their rank block's probability evenly
        lo = int(np.sum(err < v))
        hi = lo + int(np.sum(err == v))
        p = sum(math.comb(n - i, k - 1) for i in range(lo + 1, hi + 1)) / math.comb(n, k)
        total += p * float(reg[err == v].mean())
    return total


# ------------------------------------------------------------------ the methods' configs
def method_config_files() -> dict:
    """method -> the shipped config file (``configs/<file>.py``) whose ``:quick`` variant
    runs it (a file named after the method first)."""
    return dict(_method_config_files())


@functools.lru_cache(maxsize=1)
def _method_config_files() -> dict:  # the shipped files do not change while a process runs: read them once
    out = {}
    files = sorted(f for f in os.listdir(config_lib.SHIPPED_CONFIGS)
                   if f.endswith(".py") and not f.startswith(("_", "common", "retrain", "compare")))
    for f in files:
        try:
            cfg = config_lib.load_file(os.path.join(config_lib.SHIPPED_CONFIGS, f), "quick")
        except ValueError:  # a file without a quick variant is not a method's search config
            continue
        if "method" in cfg and (cfg.method not in out or f[:-3] == cfg.method):
            out[cfg.method] = f[:-3]
    return out


def _set(cfg, field, value):
    node = cfg
    *path, last = field.split(".")
    for p in path:
        node = node[p]
    node[last] = value


def _entry_defaults(entry: str, space: str | None = None):
    """The config file of ``entry``'s method at its variant (:func:`jaxdarts.config.base`
    for a method without a file); :class:`ConfigError` (one line) for a variant it lacks.
    On NAS-Bench-201 (``space='nb201'``) a method whose file has an ``nb201`` variant runs
    with it (its NAS-Bench-201 settings, e.g. DrNAS's K=1 and learning rates), added to
    the entry's own variant."""
    method, _, variant = entry.partition(":")
    files = method_config_files()
    if method not in files:
        if variant:
            raise ConfigError(f"config.methods entry {entry!r}: method {method!r} has no config file for variants")
        return config_lib.base(method)
    if space == "nb201" and "nb201" not in variant.split(","):
        path = os.path.join(config_lib.SHIPPED_CONFIGS, files[method] + ".py")
        if "nb201" in getattr(config_lib.load_module(path), "VARIANTS", ()):
            variant = ",".join(v for v in (variant, "nb201") if v)
    try:
        return config_lib.load_file(os.path.join(config_lib.SHIPPED_CONFIGS, files[method] + ".py"), variant)
    except ValueError as e:
        raise ConfigError(f"config.methods entry {entry!r}: {e}") from None


def method_config(entry: str, protocol, seed: int, overrides=None):
    """The config of a leaderboard entry: ``method`` or ``method:variant`` (a variant of the
    method's config file, e.g. ``robustdarts:es`` for DARTS-ES, ``robustdarts:dp`` for
    R-DARTS). The method's own defaults (its config file, :func:`method_config_files`, or
    :func:`jaxdarts.config.base`) with the protocol's fields, the seed, the warm-up scaled
    to the budget and ``overrides`` (nested ``{section: {field: value}}``) on top; per-epoch analyses are off
    for a plain method (they do not change a search) and as the variant sets them for a
    variant (DARTS-ES needs its eigenvalues). Validated: :class:`ConfigError` (one line)
    when the method cannot search the protocol."""
    variant = entry.partition(":")[2]
    cfg = _entry_defaults(entry, protocol.space)
    own_epochs = cfg.epochs
    for f in PROTOCOL_FIELDS:
        _set(cfg, f, protocol[f.replace(".", "_")])
    for f in OPTIONAL_PROTOCOL_FIELDS:
        if f.replace(".", "_") in protocol:
            _set(cfg, f, protocol[f.replace(".", "_")])
    cfg.seed, cfg.num_seeds = int(seed), 1
    cfg.arch_start_epoch = int(round(cfg.arch_start_epoch * cfg.epochs / own_epochs))
    if not variant:
        cfg.hessian_every, cfg.diagnose = 0, False
    cfg.tensorboard, cfg.progress = False, "log"
    for f, v in traverse_util.flatten_dict(dict(overrides or {}), sep=".").items():
        _set(cfg, f, v)
    config_lib.validate(cfg)
    return cfg


# ------------------------------------------------------------------ the comparison
def check(cfg) -> None:
    """One-line :class:`ConfigError` for a bad comparison config."""
    for m in tuple(cfg.methods) + tuple(cfg.variants):
        check_choice("methods", m.partition(":")[0], methods_lib.names())
        if ":" in m:
            _entry_defaults(m)  # a variant its config file lacks: one line now, not after the first searches
    for b in cfg.baselines:
        check_choice("baselines", b, BASELINES)
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"config.seeds={tuple(cfg.seeds)!r} must be distinct integers, at least one")
    for f in ("epochs", "steps_per_epoch", "batch_size", "model_C", "model_layers", "data_image_size"):
        check_positive(f"protocol.{f}", cfg.protocol[f], integer=True)
    check_choice("protocol.space", cfg.protocol.space, spaces_lib.NAMES)
    check_positive("synflow_candidates", cfg.synflow_candidates, integer=True, allow_zero=True)
    ground_truth_path(cfg.ground_truth)


def _protocol_dict(cfg) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.protocol.to_dict().items()}


def _method_names(cfg) -> list[str]:
    """The leaderboard's searches: ``cfg.methods`` (every registered method when empty), then
    ``cfg.variants`` (``method:variant`` entries)."""
    return list(cfg.methods or methods_lib.names()) + [p for p in cfg.variants if p not in cfg.methods]


def _run_dir(workdir, entry, seed):
    return os.path.join(workdir, "runs", entry.replace(":", "-").replace(",", "-"), f"seed_{seed}")


def _load_run(rundir):
    metrics = io_lib.read_jsonl(os.path.join(rundir, "metrics.jsonl"))
    final = io_lib.read_json(os.path.join(rundir, "genotype.json"))
    for stage in ("stage2", "stage1"):  # a staged program (StacNAS): its last stage
        if not metrics and os.path.isdir(os.path.join(rundir, stage)):
            metrics = io_lib.read_jsonl(os.path.join(rundir, stage, "metrics.jsonl"))
    return metrics, final


def _lookup(gt, g):
    try:
        i = gt.index(g)
    except (KeyError, ValueError, TypeError):
        return None, float("nan")
    return i, float(gt.regrets[i])


def run_entry(gt, cfg, workdir, method, seed, *, log=print, max_epochs=None, overrides=None) -> dict:
    """One method's search at one seed (resumed where its workdir has one), looked up."""
    rundir = _run_dir(workdir, method, seed)
    try:
        mcfg = method_config(method, cfg.protocol, seed, overrides)
    except (ConfigError, ValueError) as e:
        return {"status": "n/a", "reason": str(e).splitlines()[0]}
    done = io_lib.read_json(os.path.join(rundir, "genotype.json"))
    secs = io_lib.read_json(os.path.join(rundir, "compare_time.json"), {}).get("seconds", 0.0)
    if done and done.get("finished", True):
        log(f"[{method} seed {seed}] finished earlier in {rundir}: not searched again")
    else:
        t0 = time.time()
        search.run(mcfg, rundir, log=lambda *a: log(f"[{method} seed {seed}]", *a), max_epochs=max_epochs)
        secs += time.time() - t0
        io_lib.write_json(os.path.join(rundir, "compare_time.json"), {"seconds": secs})
    metrics, done = _load_run(rundir)
    final = (done or {}).get("genotype")
    # a sweep's rows hold one genotype per member (R-DARTS): follow the member its program chose
    members = (done or {}).get("genotypes")
    chosen = members.index(final) if isinstance(members, list) and final in members else None
    row = lambda g: g if not isinstance(g, list) else (g[chosen] if chosen is not None else None)  # noqa: E731
    per_epoch = [_lookup(gt, row(m["genotype"]))[1] if row(m["genotype"]) else float("nan")
                 for m in metrics if "genotype" in m]
    out = {"status": "ok" if done and done.get("finished", True) else "incomplete", "workdir": rundir,
           "regret_per_epoch": per_epoch, "seconds": secs}
    if per_epoch:
        b = int(np.nanargmin(per_epoch)) if np.isfinite(per_epoch).any() else 0
        out["best_seen"] = {"epoch": b, "regret": per_epoch[b], "genotype": metrics[b]["genotype"]}
    if final and out["status"] == "ok":
        i, r = _lookup(gt, final)
        out["final"] = {"regret": r, "test_err": float(gt.mean[i]) if i is not None else float("nan"),
                        "genotype": {k: final[k] for k in ("normal", "normal_concat", "reduce", "reduce_concat")},
                        "key": arch_key(final), "cell": i}
    return out


def random_entry(gt, cfg, seed) -> dict:
    p = cfg.protocol
    n_gt = len(gt.errors)
    select = gt.errors[seed % n_gt]
    gt_epochs, gt_n = gt.info["protocol"]["epochs"], gt.info["protocol"]["train_images"]
    ks = [random_search_budget(p.space, p.steps_per_epoch, p.batch_size, e, gt_epochs, gt_n) for e in range(p.epochs)]
    picks = [random_search_choice(select, k, seed) for k in ks]
    per_epoch = [float(gt.regrets[i]) for i in picks]
    b = int(np.argmin(per_epoch))
    return {"status": "ok", "regret_per_epoch": per_epoch, "architectures_trained": ks,
            "expected_regret_per_epoch": [expected_random_regret(select, gt.regrets, k) for k in ks],
            "final": {"regret": per_epoch[-1], "test_err": float(gt.mean[picks[-1]]), "key": gt.keys[picks[-1]],
                      "cell": picks[-1]},
            "best_seen": {"epoch": b, "regret": per_epoch[b]}, "seconds": 0.0}


def synflow_scores(cfg, seed, log=print) -> tuple[list, np.ndarray]:
    """Synflow of every architecture of the protocol's space (``cfg.synflow_candidates > 0``:
    that many drawn uniformly from the seed) on its one-hot search supernet (BatchNorm
    removed, a fresh initialisation per architecture): ``(genotypes, scores)``."""
    p = cfg.protocol
    space = spaces_lib.get(p.space)
    info = data_lib.info(p.dataset)
    model = supernet_lib.Supernet(space, info.num_classes, C=p.model_C, layers=p.model_layers,
                                  lowering=kernels.resolve_lowering(p.get("model_depthwise", "auto")),
                                  track_running_stats=False)
    n = space_size(space)
    pick = None
    if cfg.synflow_candidates and cfg.synflow_candidates < n:  # Zero-cost NAS on a sample of the space
        pick = np.sort(np.random.default_rng(seed).choice(n, cfg.synflow_candidates, replace=False))
    archs = space_architectures(space, pick)
    alphas = [genotype_lib.to_alpha(space, g) for g in archs]
    stacked = {t: jnp.stack([a[t] for a in alphas]) for t in space.cell_types}
    keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), 28), len(archs))
    scorer = proxies.make_scorer("synflow", model, batch_size=1, synflow_bn="none")
    t0 = time.time()
    scores = scorer(stacked, keys, (1, p.data_image_size, p.data_image_size, len(info.mean)))
    log(f"[synflow seed {seed}] scored {len(archs)} architectures in {time.time() - t0:.1f} s")
    return archs, np.asarray(scores, np.float64)


def synflow_entry(gt, cfg, workdir, seed, log=print) -> dict:
    path = os.path.join(workdir, "baselines", f"synflow_seed_{seed}.json")
    cached = io_lib.read_json(path)
    if cached is None:
        t0 = time.time()
        archs, scores = synflow_scores(cfg, seed, log)
        cached = {"keys": [arch_key(g) for g in archs], "genotypes": [g.to_dict() for g in archs],
                  "scores": [float(s) for s in scores], "seconds": time.time() - t0}
        os.makedirs(os.path.dirname(path), exist_ok=True)
        io_lib.write_json(path, cached)
    log_s = np.where(np.asarray(cached["scores"]) > 0, np.log(np.maximum(cached["scores"], 1e-300)), -np.inf)
    best = int(np.argmax(log_s))
    i, r = _lookup(gt, cached["genotypes"][best])
    return {"status": "ok", "regret_per_epoch": [r] * cfg.protocol.epochs, "seconds": cached["seconds"],
            "final": {"regret": r, "test_err": float(gt.mean[i]) if i is not None else float("nan"),
                      "key": cached["keys"][best], "cell": i},
            "best_seen": {"epoch": 0, "regret": r}}


def summarise(entry_runs: dict) -> dict:
    """Mean, std (ddof 1) and standard error over seeds of the final and best-seen regret,
    and the regret per epoch."""
    ok = [r for r in entry_runs.values() if r.get("status") in ("ok", "incomplete") and "final" in r]
    if not ok:
        return {}

    def stats(vals):
        v = np.asarray(vals, np.float64)
        sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        return {"mean": float(v.mean()), "std": sd, "se": sd / math.sqrt(len(v)), "n": len(v)}

    out = {"final_regret": stats([r["final"]["regret"] for r in ok]),
           "final_test_err": stats([r["final"]["test_err"] for r in ok]),
           "best_seen_regret": stats([r["best_seen"]["regret"] for r in ok if "best_seen" in r]),
           "seconds": stats([r.get("seconds", 0.0) for r in ok])}
    n = min(len(r["regret_per_epoch"]) for r in ok)
    if n:
        per = np.asarray([r["regret_per_epoch"][:n] for r in ok], np.float64)
        out["regret_per_epoch_mean"] = per.mean(0).tolist()
        out["regret_per_epoch_std"] = (per.std(0, ddof=1) if len(ok) > 1 else np.zeros(n)).tolist()
    return out


def statistics(gt, entries: dict, replicates: int = 4000) -> dict:
    """The two-level bootstrap of the final regrets (:func:`jaxdarts.bootstrap.analyse`:
    intervals, rank probabilities, tied groups) over every entry with finished runs, and the
    equal-cost view: each method's regret per epoch read at the seconds of one first-order
    DARTS run (the ``darts`` entry's mean), as :func:`jaxdarts.bootstrap.equal_cost`."""
    choices = {n: [r["final"]["cell"] for r in e["runs"].values()
                   if r.get("status") == "ok" and r.get("final", {}).get("cell") is not None]
               for n, e in entries.items()}
    out = bootstrap.analyse(choices, gt.errors, replicates=replicates)
    darts = (entries.get("darts") or {}).get("summary") or {}
    if darts.get("seconds", {}).get("mean"):
        curves = {n: e["summary"]["regret_per_epoch_mean"] for n, e in entries.items()
                  if e.get("kind") == "method" and (e.get("summary") or {}).get("regret_per_epoch_mean")}
        secs = {n: entries[n]["summary"]["seconds"]["mean"] for n in curves}
        out["equal_cost"] = {"budget_seconds": darts["seconds"]["mean"],
                             "methods": bootstrap.equal_cost(curves, secs, darts["seconds"]["mean"])}
    return out


def leaderboard(gt, cfg, entries: dict) -> dict:
    """The board: entries ranked by tied group, then by the point estimate of the final
    regret; entries without finished runs last."""
    stats = statistics(gt, entries)
    m = stats["methods"]
    ranking = sorted(entries, key=lambda n: (n not in m, m.get(n, {}).get("group", 0),
                                             m.get(n, {}).get("regret", 0.0), n))
    return {"protocol": _protocol_dict(cfg), "seeds": list(cfg.seeds), "statistics": stats,
            "ground_truth": {"name": gt.name, "space": gt.space, "dataset": gt.dataset, "best_test_err": gt.best,
                             "regret_reference": gt.reference,
                             "architectures": len(gt.keys), "seeds": gt.info.get("seeds"),
                             "protocol": gt.info.get("protocol"), "mean_regret_of_the_space":
                                 float(gt.regrets.mean())},
            "ranking": ranking, "entries": entries,
            "warnings": ([f"the ground truth was measured on {gt.dataset}, the searches ran on {cfg.protocol.dataset}"]
                         if gt.dataset != cfg.protocol.dataset else []),
            "written": time.strftime("%Y-%m-%d %H:%M:%S")}


def markdown(board: dict) -> str:
    """The leaderboard as a Markdown table (best final regret first)."""
    p, g = board["protocol"], board["ground_truth"]
    lines = [f"Space `{p['space']}` on `{p['dataset']}` ({p['data_image_size']}px, C={p['model_C']}, "
             f"{p['model_layers']} cells), {p['epochs']} epochs x {p['steps_per_epoch']} steps of batch "
             f"{p['batch_size']}; seeds {', '.join(map(str, board['seeds']))}. Ground truth `{g['name']}`: "
             f"{g['architectures']} architectures, best mean test error {g['best_test_err']:.4f}, a random "
             f"architecture's mean regret {g['mean_regret_of_the_space']:.4f}."
             + "".join(f" Warning: {w}." for w in board.get("warnings", ())), ""]
    st = board.get("statistics") or {"methods": {}, "groups": []}
    ec = (st.get("equal_cost") or {}).get("methods", {})
    ref = {"cross_fitted": "the best cell chosen on held-out ground-truth seeds (cross-fitted)",
           "min_mean": "the lowest mean test error (one ground-truth seed: nothing held out)"}[st.get("reference",
                                                                                                      "min_mean")]
    lines += [f"Regret against {ref}. Intervals: {int(st.get('level', 0.95) * 100)}% percentile intervals of a "
              f"two-level bootstrap ({st.get('replicates', 0)} replicates over search seeds and ground-truth seeds). "
              "Entries that share a rank cannot be told apart at that level (the difference to the best entry of "
              "their group has an interval containing 0); P(rank 1) is the bootstrap probability of the lowest "
              "regret." + (f" Regret at DARTS's cost: the per-epoch curve (mean over seeds) read at "
                           f"{st['equal_cost']['budget_seconds']:.0f} s, one first-order DARTS run."
                           if st.get("equal_cost") else ""), "",
              "| rank | method | final regret [interval] | P(rank 1) | best-seen regret | final test error | seeds | "
              "time per run | regret at DARTS's cost |", "|---|---|---|---|---|---|---|---|---|"]
    sizes = {g: sum(1 for v in st["methods"].values() if v["group"] == g) for g in range(1, len(st["groups"]) + 1)}
    for name in board["ranking"]:
        e = board["entries"][name]
        s, b = e.get("summary") or {}, st["methods"].get(name)
        if not s or b is None:
            runs = list(e["runs"].values())
            na = next((x["reason"] for x in runs if x.get("status") == "n/a"), None)
            text = f"n/a: {na}" if na else "incomplete: re-run the command to continue"
            lines.append(f"| - | {name} | {text} | | | | | | |")
            continue
        bs, te, sec = s["best_seen_regret"], s["final_test_err"], s["seconds"]
        rank = f"{b['group']}" + ("=" if sizes.get(b["group"], 1) > 1 else "")
        at = ec.get(name)
        at = "" if at is None else ("over budget" if at["regret"] is None else f"{at['regret']:.4f} ({at['epochs']} ep)")
        lines.append(f"| {rank} | {name} | {b['regret']:.4f} [{b['low']:.4f}, {b['high']:.4f}] | "
                     f"{b['rank_probabilities'][0]:.2f} | {bs.get('mean', float('nan')):.4f} | {te['mean']:.4f} | "
                     f"{b['n']} | {sec['mean']:.0f} s | {at} |")
    return "\n".join(lines) + "\n"


def regret_figure(board: dict) -> str | None:
    """Two panels as base64 PNG: the regret per epoch per method (mean over seeds; baselines
    dashed) and the final regret per method (each seed a dot, the mean with its standard
    error), best first."""
    plt = cell_diagram.need_matplotlib()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1.35, 1]})
    tab = plt.get_cmap("tab20").colors
    colors = list(tab[::2]) + list(tab[1::2])  # 20 distinct colours: strong ones first
    drawn = []
    for i, name in enumerate(board["ranking"]):
        e = board["entries"][name]
        runs = [r["regret_per_epoch"] for r in e["runs"].values() if r.get("regret_per_epoch")]
        if not runs:
            continue
        n = min(len(r) for r in runs)
        per = np.asarray([r[:n] for r in runs], np.float64)
        c = colors[i % len(colors)]
        ax.plot(np.arange(1, n + 1), np.nanmean(per, 0), "--" if e["kind"] == "baseline" else "-", marker="o",
                ms=3, color=c, label=name, lw=1.4)
        finals = [r["final"]["regret"] for r in e["runs"].values() if "final" in r]
        if finals:
            y = len(drawn)
            bx.scatter(finals, [y] * len(finals), color=c, s=18, alpha=0.6, zorder=2)
            b = (board.get("statistics") or {}).get("methods", {}).get(name)
            if b is not None:
                bx.errorbar([b["regret"]], [y], xerr=[[b["regret"] - b["low"]], [b["high"] - b["regret"]]], fmt="D",
                            color=c, ms=6, capsize=3, zorder=3)
            drawn.append(name)
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("search epoch")
    ax.set_ylabel("test regret of the derived cell")
    ax.set_title("Regret per epoch (mean over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    bx.set_yticks(range(len(drawn)), drawn, fontsize=8)
    bx.invert_yaxis()
    bx.axvline(board["ground_truth"]["mean_regret_of_the_space"], color="gray", ls=":", lw=1)
    bx.text(board["ground_truth"]["mean_regret_of_the_space"], len(drawn) - 0.5, " random cell", color="gray",
            fontsize=7, va="bottom")
    bx.set_xlabel("final regret (dots: seeds; diamond: mean, two-level bootstrap interval)")
    bx.set_title("Final architecture", fontsize=10)
    bx.grid(alpha=0.3, axis="x")
    with warnings.catch_warnings():  # a board of one or two entries leaves matplotlib no room to adjust: harmless
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
    return cell_diagram.png(fig)


def render_html(board: dict, fig: str | None = None) -> str:
    """The page: the table, the regret figure (``fig``: base64 PNG, drawn when None), the
    final cell of every run."""
    md = markdown(board).splitlines()
    paras, table = [l for l in md if l and not l.startswith("|")], [l for l in md if l.startswith("|")]
    cells = lambda l: [html.escape(c.strip()) for c in l.strip("|").split("|")]  # noqa: E731
    rows = "".join("<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{c}</{'th' if i == 0 else 'td'}>"
                                    for c in cells(l)) + "</tr>" for i, l in enumerate(table) if i != 1)
    fig = regret_figure(board) if fig is None else fig
    finals = []
    for name in board["ranking"]:
        for seed, r in board["entries"][name]["runs"].items():
            if "final" in r:
                finals.append(f"<tr><td>{html.escape(name)}</td><td>{seed}</td><td>{r['final']['regret']:.4f}</td>"
                              f"<td><code>{html.escape(r['final']['key'])}</code></td></tr>")
    return "\n".join([
        "<!doctype html><html><head><meta charset='utf-8'><title>jaxdarts leaderboard</title>",
        "<style>body{font-family:sans-serif;margin:1em;max-width:70em} table{border-collapse:collapse;margin:1em 0} "
        "td,th{padding:4px 8px;border-top:1px solid #ddd;text-align:left}</style></head><body>",
        "<h1>jaxdarts leaderboard</h1>", "".join(f"<p>{html.escape(p)}</p>" for p in paras), f"<table>{rows}</table>",
        f"<img src='data:image/png;base64,{fig}'/>" if fig else "<p><i>no epochs yet</i></p>",
        "<h2>Final architectures</h2><table><tr><th>method</th><th>seed</th><th>regret</th><th>cell</th></tr>",
        "".join(finals), "</table></body></html>"])


def write_outputs(board: dict, workdir: str) -> None:
    """``leaderboard.json``, ``.md``, ``.html`` and ``.png`` (the regret figure) in ``workdir``."""
    io_lib.write_json(os.path.join(workdir, "leaderboard.json"), board, indent=1)
    fig = regret_figure(board) or ""
    for name, data in (("leaderboard.md", markdown(board).encode()), ("leaderboard.html", render_html(board, fig).encode()),
                       ("leaderboard.png", base64.b64decode(fig))):
        if data:
            tmp = os.path.join(workdir, name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, os.path.join(workdir, name))


def _merge(a: dict, b: dict) -> dict:
    """``a`` with ``b`` on top, nested dicts merged."""
    flat = traverse_util.flatten_dict
    return traverse_util.unflatten_dict({**flat(dict(a)), **flat(dict(b))})


def _check_resume(cfg, workdir):
    path = os.path.join(workdir, "config.json")
    # the ground truth only changes lookups (the leaderboard is recomputed from the runs every time)
    now = {"protocol": _protocol_dict(cfg), "overrides": json.loads(json.dumps(cfg.overrides.to_dict()))}
    old = io_lib.read_json(path)
    if old is not None:
        diff = [k for k in now if old.get(k) != now[k]]
        if diff:
            raise ValueError(f"workdir {workdir!r} holds a comparison with another {', '.join(diff)} "
                             f"(run: {json.dumps({k: old.get(k) for k in diff})}); use another --workdir")
    io_lib.write_json(path, dict(now, methods=_method_names(cfg), seeds=list(cfg.seeds),
                                 baselines=list(cfg.baselines), ground_truth=cfg.ground_truth), indent=1)


def run(cfg, workdir: str, *, log=print, max_epochs: int | None = None) -> dict:
    """Runs (or resumes) the comparison ``cfg`` in ``workdir`` and writes the leaderboard
    files after every run; returns the leaderboard."""
    check(cfg)
    gt = load_ground_truth(cfg.ground_truth)
    if gt.space != cfg.protocol.space:
        raise ConfigError(f"config.ground_truth={cfg.ground_truth!r} is for space {gt.space!r}, not "
                          f"config.protocol.space={cfg.protocol.space!r}")
    os.makedirs(workdir, exist_ok=True)
    _check_resume(cfg, workdir)
    overrides = cfg.overrides.to_dict()
    entries = {}

    def publish():
        board = leaderboard(gt, cfg, entries)
        write_outputs(board, workdir)
        return board

    for b in cfg.baselines:
        runs = {}
        for s in cfg.seeds:
            runs[str(s)] = random_entry(gt, cfg, s) if b == "random" else synflow_entry(gt, cfg, workdir, s, log)
        entries[b] = {"kind": "baseline", "runs": runs, "summary": summarise(runs)}
    for m in _method_names(cfg):
        runs = {}
        f = method_config_files().get(m.partition(":")[0])
        entries[m] = {"kind": "method", "config": f and f"configs/{f}.py:{m.partition(':')[2]}".rstrip(":"), "runs": runs}
        for s in cfg.seeds:
            runs[str(s)] = run_entry(gt, cfg, workdir, m, s, log=log, max_epochs=max_epochs,
                                     overrides=_merge(overrides.get(m.partition(":")[0], {}), overrides.get(m, {})))
            entries[m]["summary"] = summarise(runs)
            publish()
            if runs[str(s)]["status"] == "n/a":
                for rest in cfg.seeds[cfg.seeds.index(s) + 1:]:
                    runs[str(rest)] = dict(runs[str(s)])
                break
    return publish()
