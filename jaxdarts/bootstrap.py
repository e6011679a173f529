"""Leaderboard statistics: a two-level bootstrap over search seeds and ground-truth seeds.

A method's final regret has two sources of noise: which search seeds it ran (its choice
varies from seed to seed) and which ground-truth seeds measured the cells (each cell's test
error is itself a mean over a few trainings). :func:`analyse` resamples both: every
replicate draws the ground truth's seeds with replacement (the rows of the error table,
shared by every method, so comparisons are paired in the ground truth) and, per method, its
search seeds with replacement, and recomputes every method's mean regret. From the
replicates: a 95% percentile interval per mean, per method the probability of each rank, and
*tied groups*: methods whose difference to the best method of their group has a 95%
interval containing 0 share that group's rank.

Regret reference (``reference``):

* ``'cross_fitted'`` (the default with two or more ground-truth seeds): the best cell is
  chosen on held-out seeds. For each ground-truth row ``k`` the best cell ``b_k`` is the
  argmin of the mean over the other rows, and ``regret(i) = mean_k (E[k, i] - E[k, b_k])``.
  Against the minimum of the same noisy means (``'min_mean'``) every regret is biased
  upward by the minimum's optimism and landing on that one cell gives exactly 0; the
  cross-fitted reference has no such bias (a cell can have negative regret).
* ``'min_mean'``: ``mean(i) - min_j mean(j)`` (the only choice with one ground-truth seed).
"""

from __future__ import annotations

import numpy as np

REFERENCES = ("cross_fitted", "min_mean")


def regrets(errors: np.ndarray, reference: str = "cross_fitted") -> np.ndarray:
    """Regret of every cell from the ground-truth error table ``errors`` (rows: seeds)."""
    e = np.asarray(errors, np.float64)
    if reference not in REFERENCES:
        raise ValueError(f"reference={reference!r}; accepted: {', '.join(REFERENCES)}")
    if reference == "min_mean" or len(e) < 2:
        m = e.mean(0)
        return m - m.min()
    total = e.sum(0)
    out = np.zeros(e.shape[1])
    for k in range(len(e)):
        held_in = (total - e[k]) / (len(e) - 1)
        b = int(np.argmin(held_in))
        out += e[k] - e[k, b]
    return out / len(e)


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` along the last axis (ties: the earlier entry first)."""
    return np.argsort(np.argsort(values, axis=-1, kind="stable"), axis=-1, kind="stable") + 1


def analyse(choices: dict, errors: np.ndarray, *, reference: str = "cross_fitted", replicates: int = 4000,
            seed: int = 0, level: float = 0.95) -> dict:
    """Bootstrap statistics of the methods' final regrets.

    Args:
      choices: ``{method: [cell index chosen by each search seed]}`` (indices into the
        columns of ``errors``); a method with no seeds is left out.
      errors: ``(ground-truth seeds, cells)`` test errors.
      reference: :data:`REFERENCES`.
      replicates: bootstrap replicates.

    Returns ``{'reference', 'replicates', 'methods': {m: {'regret', 'low', 'high', 'n',
    'rank_probabilities', 'group'}}, 'groups': [[m, ...], ...]}``: ``regret`` is the point
    estimate (all seeds), ``low``/``high`` the ``level`` percentile interval,
    ``rank_probabilities[r]`` the probability of rank ``r + 1``, ``group`` the 1-based tied
    group.
    """
    e = np.asarray(errors, np.float64)
    names = [m for m, c in choices.items() if len(c)]
    idx = {m: np.asarray(choices[m], np.int64) for m in names}
    ref = reference if len(e) >= 2 else "min_mean"
    point = regrets(e, ref)
    rng = np.random.default_rng(seed)
    boot = np.zeros((replicates, len(names)))
    for b in range(replicates):
        r = regrets(e[rng.integers(0, len(e), len(e))], ref)
        for j, m in enumerate(names):
            c = idx[m]
            boot[b, j] = r[c[rng.integers(0, len(c), len(c))]].mean()
    est = np.array([point[idx[m]].mean() for m in names])
    a = (1 - level) / 2
    low, high = np.quantile(boot, a, axis=0), np.quantile(boot, 1 - a, axis=0)
    ranks = _ranks(boot)
    probs = np.stack([(ranks == k + 1).mean(0) for k in range(len(names))], 1) if names else np.zeros((0, 0))
    groups, order, placed = [], list(np.argsort(est, kind="stable")), set()
    for j in order:
        if j in placed:
            continue
        group = [j]
        for k in order:
            if k in placed or k == j:
                continue
            d = boot[:, k] - boot[:, j]
            if np.quantile(d, a) <= 0 <= np.quantile(d, 1 - a):
                group.append(k)
        placed.update(group)
        groups.append(group)
    out = {"reference": ref, "replicates": replicates, "level": level, "methods": {},
           "groups": [[names[j] for j in g] for g in groups]}
    for gi, g in enumerate(groups):
        for j in g:
            out["methods"][names[j]] = {"regret": float(est[j]), "low": float(low[j]), "high": float(high[j]),
                                        "n": int(len(idx[names[j]])), "group": gi + 1,
                                        "rank_probabilities": [float(p) for p in probs[j]]}
    return out


def equal_cost(regret_per_epoch: dict, seconds: dict, budget: float) -> dict:
    """Each method's mean regret read off its per-epoch curve at ``budget`` seconds (a
    first-order DARTS run's): the last epoch finished within the budget, assuming the
    method's epochs cost the same (``seconds[m] / len(curve)`` each); None when even its
    first epoch costs more."""
    out = {}
    for m, curve in regret_per_epoch.items():
        if not curve or not seconds.get(m):
            continue
        per_epoch = seconds[m] / len(curve)
        e = int(np.floor(budget / per_epoch + 1e-9))
        out[m] = {"epochs": min(e, len(curve)), "regret": float(curve[min(e, len(curve)) - 1]) if e >= 1 else None}
    return out
