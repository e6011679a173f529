"""bin/compare.py: every registered method and both baselines on S5 against a ground truth.

The lookups are checked against architecture keys written out by hand, the random-search
baseline against a brute-force enumeration of its draws, the budget against the
arithmetic of the docstring, and the whole command at a tiny budget with a synthetic
ground truth (every registered method, resumed after an interruption)."""

import itertools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from jaxdarts import compare
from jaxdarts import config as config_lib
from jaxdarts import genotype as genotype_lib
from jaxdarts import io as io_lib
from jaxdarts import methods

S5_OPS = ("sep_conv_3x3", "skip_connect", "max_pool_3x3")


def _hand_key(n0, n1, r0, r1):
    """An S5 architecture written out: node 2 of each cell takes c_{k-2} (input 0) through one
    op and c_{k-1} (input 1) through another."""
    return f"normal: {n0}@0 {n1}@1 | reduce: {r0}@0 {r1}@1"


def _synthetic_ground_truth(path, seed=0):
    keys = [_hand_key(*c) for c in itertools.product(S5_OPS, repeat=4)]
    rng = np.random.default_rng(seed)
    errors = rng.uniform(0.2, 0.5, (2, len(keys)))
    table = {"name": "synthetic", "space": "s5", "dataset": "fashion_mnist", "seeds": [2, 3],
             "protocol": {"epochs": 3, "train_images": 10000},
             "architectures": [{"key": k, "test_err": errors[:, i].tolist()} for i, k in enumerate(keys)]}
    with open(path, "w") as f:
        json.dump(table, f)
    # the regret of each cell against the best cell of the other seed (cross-fitted), by hand
    regret = ((errors[0] - errors[0, np.argmin(errors[1])]) + (errors[1] - errors[1, np.argmin(errors[0])])) / 2
    return dict(zip(keys, regret))


def test_s5_architectures_and_keys_are_the_81_cells_written_out():
    archs = compare.space_architectures("s5")
    assert [compare.arch_key(g) for g in archs] == [_hand_key(*c) for c in itertools.product(S5_OPS, repeat=4)]
    # a node's inputs listed strongest first (as the references print them) give the same key
    g = genotype_lib.Genotype(normal=(("max_pool_3x3", 1), ("sep_conv_3x3", 0)), normal_concat=(2,),
                              reduce=(("skip_connect", 1), ("skip_connect", 0)), reduce_concat=(2,))
    assert compare.arch_key(g) == compare.arch_key(g.to_dict()) == _hand_key("sep_conv_3x3", "max_pool_3x3",
                                                                              "skip_connect", "skip_connect")


def test_random_search_budget_is_the_docstrings_arithmetic():
    # s5: 3 ops per edge; search epoch e costs 2 * 3 * (e + 1) * steps * batch images through one
    # discrete network; one ground-truth architecture 3 epochs x 10,000 images
    ks = [compare.random_search_budget("s5", 20, 64, e, 3, 10000) for e in range(10)]
    assert ks == [max(1, (6 * (e + 1) * 20 * 64) // 30000) for e in range(10)] == [1] * 7 + [2] * 3
    assert compare.random_search_budget("s5", 400, 64, 49, 3, 10000) == 6 * 50 * 400 * 64 // 30000 == 256


def test_expected_random_regret_against_enumerating_every_draw():
    rng = np.random.default_rng(1)
    n = 7
    select = np.round(rng.uniform(0, 1, n), 1)
    select[3] = select[5]  # a tie in the selection error
    regrets = rng.uniform(0, 0.2, n)
    for k in range(1, n + 1):
        # every k-subset equally likely; ties broken uniformly among the tied members of the subset
        total = 0.0
        for subset in itertools.combinations(range(n), k):
            best = min(select[list(subset)])
            tied = [i for i in subset if select[i] == best]
            total += np.mean(regrets[tied])
        assert compare.expected_random_regret(select, regrets, k) == pytest.approx(total / math.comb(n, k), abs=1e-12)
    # the drawn choices average to the expectation (and are the lowest selection error of the first k drawn)
    draws = [compare.random_search_choice(select, 3, s) for s in range(4000)]
    for s, i in enumerate(draws[:50]):
        first = np.random.default_rng(s).permutation(n)[:3]
        assert i in first and select[i] == select[first].min()
    mc = np.mean(regrets[draws])
    assert mc == pytest.approx(compare.expected_random_regret(select, regrets, 3), abs=4 * regrets.std() / math.sqrt(4000))


def test_each_method_gets_the_protocol_and_a_warm_up_scaled_to_the_budget():
    cfg = config_lib.load_file(os.path.join(REPO, "configs", "compare.py"), "s5")
    p = cfg.protocol
    for name in methods.names():
        try:
            c = compare.method_config(name, p, seed=1)
        except config_lib.ConfigError as e:
            assert name == "stacnas" and "no 'none' op" in str(e)  # the one method S5 cannot host
            continue
        assert (c.dataset, c.space, c.data.image_size, c.data.max_examples, c.model.C, c.model.layers, c.batch_size,
                c.epochs, c.steps_per_epoch, c.seed, c.num_seeds, c.hessian_every) == \
            ("fashion_mnist", "s5", 16, 0, 8, 5, 64, 10, 20, 1, 1, 0)
        own = config_lib.load_file(os.path.join(REPO, "configs", compare.method_config_files()[name] + ".py"), "")
        assert c.arch_start_epoch == round(own.arch_start_epoch * 10 / own.epochs)
        assert c.estimator == own.estimator and c.optim.to_dict() == own.optim.to_dict()  # its own defaults
    assert compare.method_config("msdarts", p, 0).arch_start_epoch == 1  # the reference waits 5 of 50 epochs


def _run_dir(work, m):
    return os.path.join(work, "runs", m.replace(":", "-"), "seed_0")


def test_compare_runs_every_method_and_both_baselines_and_resumes(tmp_path):
    truth = _synthetic_ground_truth(tmp_path / "gt.json")
    cfg = config_lib.load_file(os.path.join(REPO, "configs", "compare.py"), "tiny")
    cfg.ground_truth = str(tmp_path / "gt.json")
    cfg.methods = ()  # every registered method
    assert cfg.variants == ("stacnas:one_stage",)  # StacNAS's one-level stage: S5 has no 'none' for its stage 1
    work = str(tmp_path / "cmp")
    board = compare.run(cfg, work, log=lambda *_: None, max_epochs=1)  # interrupted after each run's first epoch
    applicable = [m for m in methods.names() + cfg.variants if m != "stacnas"]
    assert all(board["entries"][m]["runs"]["0"]["status"] == "incomplete" for m in applicable)
    assert "incomplete: re-run the command to continue" in open(os.path.join(work, "leaderboard.md")).read()
    board = compare.run(cfg, work, log=lambda *_: None)  # the same command again: resumes
    assert set(board["entries"]) == set(methods.names()) | {"random", "synflow", "stacnas:one_stage"}
    assert board["entries"]["stacnas:one_stage"]["config"] == "configs/stacnas.py:one_stage"
    tf = io_lib.read_json(os.path.join(work, "runs", "balenas", "seed_0", "config.json"))["balenas"]
    assert (tf["num_candidates"], tf["tf"]["layers"]) == (4, 1)  # the tiny variant's nested override
    for m in applicable:
        run = board["entries"][m]["runs"]["0"]
        rundir = os.path.join(work, "runs", m.replace(":", "-"), "seed_0")
        rows = io_lib.read_jsonl(os.path.join(rundir, "stage1" if m.startswith("stacnas") else "", "metrics.jsonl"))
        assert [r["epoch"] for r in rows] == [0, 1], m

        def hand(g):  # the row's genotype written out by hand (inputs sorted)
            n, r = (sorted(g[t], key=lambda e: e[1]) for t in ("normal", "reduce"))
            return _hand_key(n[0][0], n[1][0], r[0][0], r[1][0])

        assert run["regret_per_epoch"] == pytest.approx([truth[hand(r["genotype"])] for r in rows]), m
        final = io_lib.read_json(os.path.join(work, "runs", m.replace(":", "-"), "seed_0", "genotype.json"))["genotype"]
        assert run["status"] == "ok" and run["final"]["regret"] == pytest.approx(truth[hand(final)]), m
        assert run["best_seen"]["regret"] == pytest.approx(min(run["regret_per_epoch"]))
    assert board["entries"]["stacnas"]["runs"]["0"]["status"] == "n/a"
    # synflow: the architecture of the highest score, every epoch the same
    syn = io_lib.read_json(os.path.join(work, "baselines", "synflow_seed_0.json"))
    top = int(np.argmax(syn["scores"]))
    assert board["entries"]["synflow"]["runs"]["0"]["final"]["key"] == syn["keys"][top]
    assert board["entries"]["synflow"]["runs"]["0"]["regret_per_epoch"] == [truth[syn["keys"][top]]] * 2
    rnd = board["entries"]["random"]["runs"]["0"]
    assert rnd["architectures_trained"] == [1, 1]  # 2 * 3 * (e + 1) * 2 * 8 images << 3 * 10,000
    # ranked by tied group, then by mean final regret; the Markdown table and the page list every entry
    finals = {m: e["summary"]["final_regret"]["mean"] for m, e in board["entries"].items() if e.get("summary")}
    groups = {m: s["group"] for m, s in board["statistics"]["methods"].items()}
    assert set(groups) == set(finals)
    assert board["ranking"][:len(finals)] == sorted(finals, key=lambda m: (groups[m], finals[m], m))
    assert all(board["statistics"]["methods"][m]["regret"] == pytest.approx(finals[m]) for m in finals)
    md, page = (open(os.path.join(work, f)).read() for f in ("leaderboard.md", "leaderboard.html"))
    assert all(f"| {m} |" in md for m in board["entries"]) and "n/a: config.space='s5' has no 'none' op" in md
    assert page.count("data:image/png;base64,") == 1 and all(m in page for m in board["entries"])
    assert open(os.path.join(work, "leaderboard.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    # the command on the finished workdir: no search runs again (its log says so for every run,
    # no run's metrics change), the same leaderboard
    metrics = {m: open(os.path.join(work, "runs", m.replace(":", "-"), "seed_0",
                                    "stage1" if m.startswith("stacnas") else "", "metrics.jsonl")).read()
               for m in applicable}
    r = subprocess.run([sys.executable, os.path.join(REPO, "bin", "compare.py"), "--config",
                        "configs/compare.py:tiny", "--workdir", work, f"--config.ground_truth={cfg.ground_truth}",
                        "--compilation_cache", "none"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    again = io_lib.read_json(os.path.join(work, "leaderboard.json"))
    strip = lambda b: {m: {s: {k: v for k, v in run.items() if k != "seconds"} for s, run in e["runs"].items()}  # noqa: E731
                       for m, e in b["entries"].items()}
    assert strip(again) == strip(json.loads(json.dumps(board))) and "| synflow |" in r.stdout
    for m in applicable:
        lines = [l for l in (r.stdout + r.stderr).splitlines() if l.startswith(f"[{m} seed 0]")]
        assert lines == [f"[{m} seed 0] finished earlier in {_run_dir(work, m)}: not searched again"], (m, lines)
        assert open(os.path.join(work, "runs", m.replace(":", "-"), "seed_0",
                                 "stage1" if m.startswith("stacnas") else "", "metrics.jsonl")).read() == metrics[m]


def test_a_sweep_program_is_followed_through_the_member_it_chose(tmp_path):
    """R-DARTS (``robustdarts:dp``) runs a sweep: each metrics row holds one genotype per
    member, and the regret per epoch is the chosen member's (a workdir written by hand, as
    the R-DARTS program writes it; the program itself: test_rdarts)."""
    truth = _synthetic_ground_truth(tmp_path / "gt.json")
    cfg = config_lib.load_file(os.path.join(REPO, "configs", "compare.py"), "tiny")
    cfg.ground_truth = str(tmp_path / "gt.json")
    gt = compare.load_ground_truth(cfg.ground_truth)
    arch = lambda n0, n1, r0, r1: {"normal": [[n0, 0], [n1, 1]], "normal_concat": [2],  # noqa: E731
                                   "reduce": [[r0, 0], [r1, 1]], "reduce_concat": [2]}
    a, b, c = (arch(*S5_OPS[i:] + S5_OPS[:i], S5_OPS[i]) for i in range(3))
    rundir = os.path.join(tmp_path, "w", "runs", "robustdarts-dp", "seed_0")
    os.makedirs(rundir)
    io_lib.write_jsonl(os.path.join(rundir, "metrics.jsonl"), [{"epoch": 0, "genotype": [a, b]},
                                                                {"epoch": 1, "genotype": [c, b]}])
    io_lib.write_json(os.path.join(rundir, "genotype.json"), {"genotype": b, "genotypes": [a, b]})
    run = compare.run_entry(gt, cfg, str(tmp_path / "w"), "robustdarts:dp", 0)
    key = lambda g: _hand_key(g["normal"][0][0], g["normal"][1][0], g["reduce"][0][0], g["reduce"][1][0])  # noqa: E731
    assert run["regret_per_epoch"] == pytest.approx([truth[key(b)]] * 2)
    assert run["status"] == "ok" and run["final"]["regret"] == pytest.approx(truth[key(b)])


def test_bad_comparison_configs_are_one_line_errors_and_write_nothing(tmp_path):
    for flag, message in (("--config.methods=('dart',)", "config.methods='dart' is not accepted; accepted: "
                           + ", ".join(methods.names())),
                          ("--config.baselines=('grid',)", "config.baselines='grid' is not accepted; accepted: random, "
                                                           "synflow"),
                          ("--config.ground_truth=nb_201", "config.ground_truth='nb_201' is not accepted; accepted: "
                                                           "s5_fashion_mnist, nb201, or a path to a .json table"),
                          ("--config.ground_truth=nb201", "config.ground_truth='nb201' is for space 'nb201', not "
                                                          "config.protocol.space='s5'"),
                          ("--config.seeds=(1,1)", "config.seeds=(1, 1) must be distinct"),
                          ("--config.methods=('robustdarts:fast',)", "config.methods entry 'robustdarts:fast': unknown "
                                                                     "variant 'fast' of configs/rdarts.py")):
        r = subprocess.run([sys.executable, os.path.join(REPO, "bin", "compare.py"), "--config",
                            "configs/compare.py:tiny", "--workdir", str(tmp_path / "w"), flag],
                           capture_output=True, text=True, cwd=REPO, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and message in lines[0], (flag, r.stderr)
        assert not os.path.exists(tmp_path / "w")
    # a comparison on another protocol is refused in the workdir of this one
    _synthetic_ground_truth(tmp_path / "gt.json")
    cfg = config_lib.load_file(os.path.join(REPO, "configs", "compare.py"), "tiny")
    cfg.ground_truth, cfg.methods, cfg.baselines = str(tmp_path / "gt.json"), ("stacnas",), ("random",)
    cfg.variants = ()
    board = compare.run(cfg, str(tmp_path / "w2"), log=lambda *_: None)  # nothing to search: S5 has no 'none'
    assert board["ranking"] == ["random", "stacnas"]
    cfg.protocol.epochs = 3
    with pytest.raises(ValueError, match="holds a comparison with another protocol"):
        compare.run(cfg, str(tmp_path / "w2"), log=lambda *_: None)


def test_nas_bench_201_path_against_the_accuracy_table(tmp_path):
    """NAS-Bench-201 with the optional table (analog-nasbench, in the dev extra): the search
    runs on the embedded data here (CIFAR-10 in ``configs/compare.py:nb201``), so the
    leaderboard says that the table was measured on another dataset."""
    from jaxdarts import nb201

    cfg = config_lib.load_file(os.path.join(REPO, "configs", "compare.py"), "tiny")
    cfg.ground_truth, cfg.methods, cfg.variants, cfg.synflow_candidates = "nb201", ("darts",), (), 12
    cfg.protocol.update(dict(space="nb201", model_layers=1, epochs=1))
    board = compare.run(cfg, str(tmp_path / "nb"), log=lambda *_: None)
    errors = {k: 1 - a / 100 for k, a in nb201.table().items()}
    best = min(errors.values())
    assert len(errors) == 15625 and board["ground_truth"]["architectures"] == 15625
    final = io_lib.read_json(os.path.join(tmp_path, "nb", "runs", "darts", "seed_0", "genotype.json"))["genotype"]
    g = genotype_lib.Genotype.from_json(final)
    assert board["entries"]["darts"]["runs"]["0"]["final"]["regret"] == pytest.approx(
        errors[nb201.naslib_op_indices(g.to_nb201_str())] - best)
    syn = io_lib.read_json(os.path.join(tmp_path, "nb", "baselines", "synflow_seed_0.json"))
    assert len(syn["keys"]) == 12 and len(set(syn["keys"])) == 12
    top = genotype_lib.Genotype.from_json(syn["genotypes"][int(np.argmax(syn["scores"]))])
    assert board["entries"]["synflow"]["runs"]["0"]["final"]["regret"] == pytest.approx(
        errors[nb201.naslib_op_indices(top.to_nb201_str())] - best)
    assert board["warnings"] == ["the ground truth was measured on cifar10, the searches ran on fashion_mnist"]
    assert "Warning: the ground truth was measured on cifar10" in open(os.path.join(tmp_path, "nb", "leaderboard.md")).read()


def test_the_shipped_s5_ground_truth():
    """The table bin/compare.py reads by default: every S5 cell once, on the network of
    ``configs/compare.py:s5`` (the comparison's search network at a one-hot alpha), at least
    two seeds on the full 10,000-image test set, and the command that regenerates it."""
    gt = compare.load_ground_truth("s5_fashion_mnist")
    assert sorted(gt.keys) == sorted(_hand_key(*c) for c in itertools.product(S5_OPS, repeat=4))
    assert gt.errors.shape[0] >= 2 and ((gt.errors > 0) & (gt.errors < 0.9)).all()
    raw = json.load(open(compare.ground_truth_path("s5_fashion_mnist")))
    for a in raw["architectures"]:  # the summary columns are the seeds' mean and sample std
        assert a["test_err_mean"] == pytest.approx(np.mean(a["test_err"]))
        assert a["test_err_std"] == pytest.approx(np.std(a["test_err"], ddof=1))
        # each error is a count of mistakes on the test set
        assert all(abs(e * raw["test_images"] - round(e * raw["test_images"])) < 1e-6 for e in a["test_err"])
    p = config_lib.load_file(os.path.join(REPO, "configs", "compare.py"), "s5").protocol
    g = raw["protocol"]
    assert (g["C"], g["layers"], g["image_size"]) == (p.model_C, p.model_layers, p.data_image_size)
    assert raw["test_images"] == 10000 and len(raw["seeds"]) == gt.errors.shape[0]
    assert raw["command"].startswith("python benchmarks/s5_ground_truth.py") and "--write" in raw["command"]
