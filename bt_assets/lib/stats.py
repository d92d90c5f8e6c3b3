"""Interval estimates: Wilson score intervals for proportions and a cluster (problem) bootstrap.

Samples of the same problem are correlated (same question, same difficulty), so intervals for
quantities pooled over rows resample PROBLEMS with replacement, keeping all rows of a drawn problem.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (95% for z = 1.96); (nan, nan) when n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def cluster_bootstrap(
    clusters: Sequence | np.ndarray,
    arrays: Sequence[Sequence | np.ndarray],
    statistic: Callable[..., float],
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of ``statistic(*arrays)`` under resampling of clusters with replacement.

    ``clusters`` labels every row (e.g. example_id); ``arrays`` are per-row arrays of the same length;
    each replicate draws as many clusters as there are, concatenates their rows and evaluates
    ``statistic`` on the resampled arrays. Replicates where the statistic is undefined (nan/inf, or a
    ZeroDivisionError) are dropped; (nan, nan) when there are no rows or no finite replicate.
    Deterministic for a given ``seed``."""
    labels = np.asarray(clusters)
    cols = [np.asarray(a) for a in arrays]
    if any(c.shape[0] != labels.shape[0] for c in cols):
        raise ValueError("every array needs one value per row of `clusters`")
    if labels.size == 0:
        return float("nan"), float("nan")
    _, inv = np.unique(labels, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    sizes = np.bincount(inv)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    m = sizes.size
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, m, size=m)
        lens = sizes[pick]
        offsets = np.repeat(starts[pick] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        rows = order[np.arange(lens.sum()) + offsets]
        with np.errstate(all="ignore"):
            try:
                stats[b] = float(statistic(*[c[rows] for c in cols]))
            except ZeroDivisionError:
                stats[b] = np.nan
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return float(lo), float(hi)


def ratio_of_means(num: np.ndarray, den: np.ndarray) -> float:
    """sum(num) / sum(den), nan when the denominator is 0 (a pooled rate)."""
    d = float(np.sum(den))
    return float(np.sum(num)) / d if d else float("nan")


def accuracy_with_without(bt: np.ndarray, ok: np.ndarray) -> tuple[float, float]:
    """(accuracy among rows with backtracking, accuracy among rows without); nan for an empty group."""
    bt = np.asarray(bt, dtype=bool)
    ok = np.asarray(ok, dtype=float)
    return ratio_of_means(ok * bt, bt), ratio_of_means(ok * ~bt, ~bt)


def accuracy_difference(bt: np.ndarray, ok: np.ndarray) -> float:
    """Accuracy with backtracking minus accuracy without."""
    a, b = accuracy_with_without(bt, ok)
    return a - b


def accuracy_lift(bt: np.ndarray, ok: np.ndarray) -> float:
    """Accuracy with backtracking divided by accuracy without (nan when the latter is 0)."""
    a, b = accuracy_with_without(bt, ok)
    return a / b if b else float("nan")
