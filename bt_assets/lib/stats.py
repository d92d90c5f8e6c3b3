"""Interval estimates: Wilson score intervals for proportions and a cluster (problem) bootstrap.

Samples of the same problem are correlated (same question, same difficulty), so intervals for
quantities pooled over rows resample PROBLEMS with replacement, keeping all rows of a drawn problem.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# Two-sided 95% Student-t quantiles t(0.975, df) for df = 1..30 (standard tables); beyond 30 the
# Cornish-Fisher expansion below is within 1e-3 of the exact value.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (for 95% mean intervals)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_interval(values: Sequence[float]) -> tuple[float, float, float, float]:
    """(mean, sample std (n-1; 0 when n < 2, as the original wrote it), 95% t-interval low, high).

    The interval is undefined (nan) for fewer than 2 values: one event has no spread to estimate."""
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n == 0:
        return (float("nan"),) * 4
    mean = float(x.mean())
    if n < 2:
        return mean, 0.0, float("nan"), float("nan")
    std = float(x.std(ddof=1))
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


@dataclass(frozen=True)
class Evidence:
    """How much data a finding needs before it says an interval excludes a value.

    Below ``min_events`` backtracking events, or with events from fewer than ``min_problems`` problems
    (samples of one problem are correlated), intervals are still reported but no claim is made from
    them; a zero-width (degenerate) interval never supports a claim either."""

    min_events: int = 5
    min_problems: int = 2

    def enough(self, events: int, problems: int) -> bool:
        return events >= self.min_events and problems >= self.min_problems

    def shortfall(self, events: int, problems: int) -> str:
        return (
            f"too few to test: {events} BT event{'s' if events != 1 else ''} from {problems} "
            f"problem{'s' if problems != 1 else ''} (claims need >= {self.min_events} events from "
            f">= {self.min_problems} problems)"
        )

    def excludes(self, lo: float | None, hi: float | None, value: float, events: int, problems: int) -> bool:
        """True when the interval [lo, hi] is finite, not degenerate, excludes ``value``, and there is
        enough data to read it."""
        if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
            return False
        return self.enough(events, problems) and not (lo <= value <= hi)


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
