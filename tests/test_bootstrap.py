"""Leaderboard statistics (jaxdarts.bootstrap) against hand computations and a direct
enumeration of every resample of a hand-made table."""

import itertools

import numpy as np
import pytest

from jaxdarts import bootstrap, compare

# two ground-truth seeds (rows) of three cells
E = np.array([[0.20, 0.25, 0.30],
              [0.26, 0.22, 0.31]])


def test_cross_fitted_regret_by_hand():
    # row 0 held out: the best of row 1 is cell 1 -> E0 - E0[1] = (-.05, 0, .05)
    # row 1 held out: the best of row 0 is cell 0 -> E1 - E1[0] = (0, -.04, .05)
    np.testing.assert_allclose(bootstrap.regrets(E), [-0.025, -0.02, 0.05], atol=1e-12)
    np.testing.assert_allclose(bootstrap.regrets(E, "min_mean"), [0.0, 0.005, 0.075], atol=1e-12)
    np.testing.assert_allclose(bootstrap.regrets(E[:1]), [0.0, 0.05, 0.10], atol=1e-12)  # one seed: min of means
    with pytest.raises(ValueError, match="reference='best'; accepted: cross_fitted, min_mean"):
        bootstrap.regrets(E, "best")


def _enumerate(choices, errors):
    """Every equally likely two-level resample: ground-truth rows, then each method's seeds."""
    names = list(choices)
    n = len(errors)
    dists = []
    for rows in itertools.product(range(n), repeat=n):
        e = errors[list(rows)]
        if n >= 2:  # cross-fitted, written out: leave each drawn row out in turn
            reg = np.mean([e[k] - e[k, np.argmin(np.delete(e, k, 0).mean(0))] for k in range(n)], 0)
        else:
            reg = e.mean(0) - e.mean(0).min()
        per = [[reg[[choices[m][i] for i in pick]].mean()
                for pick in itertools.product(range(len(choices[m])), repeat=len(choices[m]))] for m in names]
        for combo in itertools.product(*per):
            dists.append(combo)
    return np.array(dists)  # (resamples, methods), equally weighted


def test_bootstrap_matches_a_direct_enumeration_of_every_resample():
    choices = {"a": [0, 0], "b": [0, 1], "c": [2, 2], "d": [1, 2]}
    exact = _enumerate(choices, E)
    out = bootstrap.analyse(choices, E, replicates=20000, seed=1)
    ranks = np.argsort(np.argsort(exact, 1, kind="stable"), 1, kind="stable")  # ties: the earlier method first
    for j, m in enumerate(choices):
        s = out["methods"][m]
        assert s["regret"] == pytest.approx(bootstrap.regrets(E)[choices[m]].mean(), abs=1e-12)
        assert s["n"] == 2
        p_exact = [(ranks[:, j] == r).mean() for r in range(len(choices))]
        np.testing.assert_allclose(s["rank_probabilities"], p_exact, atol=0.015)
        assert np.quantile(exact[:, j], 0.025) - 1e-9 <= s["low"] <= s["high"] <= np.quantile(exact[:, j], 0.975) + 1e-9
    # c always chose the worst cell: apart from a; a and b are apart from c; the exact intervals
    # of the paired differences decide the groups
    d_ab = exact[:, 1] - exact[:, 0]
    tied_ab = np.quantile(d_ab, 0.025) <= 0 <= np.quantile(d_ab, 0.975)
    groups = out["groups"]
    assert groups[0][0] == "a" and ("b" in groups[0]) == tied_ab and "c" not in groups[0]
    assert out["methods"]["c"]["group"] == len(groups) and out["methods"]["a"]["group"] == 1
    assert out["reference"] == "cross_fitted"


def test_one_ground_truth_seed_uses_the_minimum_mean():
    out = bootstrap.analyse({"a": [1, 1, 2]}, E[:1], replicates=200)
    assert out["reference"] == "min_mean"
    assert out["methods"]["a"]["regret"] == pytest.approx((0.05 + 0.05 + 0.10) / 3)
    assert out["methods"]["a"]["rank_probabilities"] == [1.0]


def test_equal_cost_reads_the_curve_at_the_budget():
    curves = {"darts": [0.3, 0.2, 0.1, 0.05], "slow": [0.4, 0.1, 0.0, 0.0], "huge": [0.2]}
    secs = {"darts": 40.0, "slow": 80.0, "huge": 100.0}
    out = bootstrap.equal_cost(curves, secs, 40.0)
    assert out["darts"] == {"epochs": 4, "regret": 0.05}
    assert out["slow"] == {"epochs": 2, "regret": 0.1}  # 20 s per epoch: 2 epochs in 40 s
    assert out["huge"] == {"epochs": 0, "regret": None}


def test_summarise_by_hand():
    runs = {"0": {"status": "ok", "final": {"regret": 0.01, "test_err": 0.21}, "best_seen": {"regret": 0.0},
                  "regret_per_epoch": [0.05, 0.01], "seconds": 10.0},
            "1": {"status": "ok", "final": {"regret": 0.03, "test_err": 0.23}, "best_seen": {"regret": 0.02},
                  "regret_per_epoch": [0.04, 0.03, 0.02], "seconds": 14.0},
            "2": {"status": "n/a", "reason": "x"}}
    s = compare.summarise(runs)
    assert s["final_regret"]["mean"] == pytest.approx(0.02) and s["final_regret"]["n"] == 2
    assert s["final_regret"]["std"] == pytest.approx(np.sqrt(((0.01 - 0.02) ** 2 + (0.03 - 0.02) ** 2) / 1))
    assert s["final_regret"]["se"] == pytest.approx(s["final_regret"]["std"] / np.sqrt(2))
    assert s["final_test_err"]["mean"] == pytest.approx(0.22) and s["seconds"]["mean"] == pytest.approx(12.0)
    assert s["regret_per_epoch_mean"] == pytest.approx([0.045, 0.02])  # the common 2 epochs


def test_random_search_with_several_ground_truth_seeds_by_enumeration():
    """Random search with K > 1: seed s draws a permutation and keeps the first K; it selects
    by the errors of ground-truth seed s mod n (what its own training would measure) and is
    judged by the cross-fitted regret."""
    rng = np.random.default_rng(3)
    errors = rng.uniform(0.2, 0.4, (3, 81))
    for seed in range(6):
        for k in (2, 5, 81):
            perm = np.random.default_rng(seed).permutation(81)[:k]
            row = errors[seed % 3]
            want = min(perm, key=lambda i: (row[i], list(perm).index(i)))
            assert compare.random_search_choice(row, k, seed) == want
    assert compare.random_search_choice(errors[0], 81, 0) == int(np.argmin(errors[0]))
    # the baseline's entry: K_e = 2 |O| (e + 1) steps batch / (epochs_gt n_train) = 6 (e + 1)
    import ml_collections
    gt = compare.GroundTruth("t", "s5", "fashion_mnist", tuple(str(i) for i in range(81)), errors,
                             {"protocol": {"epochs": 1, "train_images": 100}})
    cfg = ml_collections.ConfigDict({"protocol": {"space": "s5", "steps_per_epoch": 10, "batch_size": 10,
                                                  "epochs": 3}})
    for seed in range(4):
        e = compare.random_entry(gt, cfg, seed)
        assert e["architectures_trained"] == [6, 12, 18]
        perm = np.random.default_rng(seed).permutation(81)[:18]
        cell = min(perm, key=lambda i: errors[seed % 3][i])
        assert e["final"]["cell"] == cell
        assert e["final"]["regret"] == pytest.approx(bootstrap.regrets(errors)[cell])
