"""Interval estimates clustered by problem, plus the Wilson score interval for a single proportion.

Samples of the same problem are correlated (same question, same difficulty), so every interval of a
quantity pooled over rows or events of several problems is clustered by problem:

* rates, paired differences, accuracy difference and lift: a percentile bootstrap over PROBLEMS
  (resample problems with replacement, keeping all rows of a drawn problem; ``BOOTSTRAP_METHOD``).
  Statistics that are ratios of column sums (``cluster_ratio_interval``, ``accuracy_split_intervals``)
  are vectorised: per-problem sums once, then every replicate adds the sums of its drawn problems;
  ``cluster_bootstrap`` evaluates any other statistic replicate by replicate. All of them draw the same
  problem indices for a seed, so the same seed gives the same interval whichever path computes it.
* means over events (logit lens, ablation scan, continuation): the mean with a t-interval on the
  problem-clustered (CR1) standard error and G - 1 degrees of freedom, G = problems
  (``clustered_mean_interval``; ``MEAN_METHOD``). It needs no seed, equals the ordinary t-interval
  when every event comes from its own problem, and agrees with the bootstrap over problems on
  clustered data (``bt_assets_tests/test_stats.py``) while staying conservative for few problems,
  where the percentile bootstrap is too narrow (with 2 problems it spans their two means at most).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
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
    stats = []
    for chunk in _draws(sizes.size, n_boot, seed):
        for pick in chunk:
            lens = sizes[pick]
            offsets = np.repeat(starts[pick] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
            rows = order[np.arange(lens.sum()) + offsets]
            with np.errstate(all="ignore"):
                try:
                    stats.append(float(statistic(*[c[rows] for c in cols])))
                except ZeroDivisionError:
                    stats.append(float("nan"))
    return percentile_interval(np.asarray(stats), level)


# --- vectorised bootstrap over problems for statistics of column sums ---------------------------------

N_BOOT = 2000
BOOTSTRAP_METHOD = "percentile bootstrap over problems (example_id)"
MEAN_METHOD = (
    "mean over events +/- t(G-1) x problem-clustered (CR1) standard error, G = problems "
    "(the ordinary t-interval when every event has its own problem)"
)
_CHUNK = 1 << 19  # problem indices drawn per chunk of replicates (bounds memory, not the result)


def bootstrap_note(n_boot: int, seed: int) -> str:
    """The one line stated beside a table whose intervals come from the bootstrap over problems."""
    return f"95% intervals: percentile bootstrap over problems ({n_boot} replicates, seed {seed})"


def mean_note() -> str:
    """The one line stated beside a table of means over events with ``clustered_mean_interval``."""
    return f"95% intervals: {MEAN_METHOD}"


def _draws(m: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """The bootstrap's draws: ``n_boot`` rows of ``m`` problem indices (with replacement), yielded in
    chunks of rows. One stream per seed, the same however it is chunked (``cluster_bootstrap`` and
    ``bootstrap_totals`` draw identical problems for a seed)."""
    rng = np.random.default_rng(seed)
    step = max(1, _CHUNK // max(m, 1))
    for start in range(0, n_boot, step):
        yield rng.integers(0, m, size=(min(step, n_boot - start), m))


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates; non-finite replicates (an undefined statistic) are
    dropped; (nan, nan) when none is finite."""
    x = np.asarray(replicates, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(x, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_totals(
    clusters: Sequence | np.ndarray, columns: Sequence[Sequence | np.ndarray], n_boot: int, seed: int
) -> np.ndarray:
    """Column sums of every replicate of the bootstrap over problems, shape (n_boot, len(columns)).

    Per-problem sums are computed once; a replicate's totals are the sums of its drawn problems (no
    loop over replicates; exact for 0/1 and integer columns). (0, k) when there are no rows."""
    labels = np.asarray(clusters)
    cols = [np.asarray(c, dtype=np.float64) for c in columns]
    if any(c.shape != labels.shape for c in cols):
        raise ValueError("every column needs one value per row of `clusters`")
    if labels.size == 0:
        return np.zeros((0, len(cols)))
    _, inv = np.unique(labels, return_inverse=True)
    m = int(inv.max()) + 1
    per = [np.bincount(inv, weights=c, minlength=m) for c in cols]  # per-problem sums, one array per column
    draws = [np.stack([p[idx].sum(axis=1) for p in per], axis=1) for idx in _draws(m, n_boot, seed)]
    return np.concatenate(draws)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return num / den


def cluster_ratio_interval(
    clusters: Sequence | np.ndarray,
    num: Sequence | np.ndarray,
    den: Sequence | np.ndarray | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of sum(num) / sum(den) (``den`` None: the number of rows, i.e. a pooled rate
    or a mean) under the bootstrap over problems; the same interval as ``cluster_bootstrap`` with that
    statistic and seed, without its per-replicate loop.

    Degenerate cases: no rows -> (nan, nan); rows of a single problem, or ``num`` all 0 (all 1 with
    ``den`` None) -> every replicate gives the estimate, a zero-width interval [estimate, estimate]
    (``Evidence`` makes no claim from it); replicates with sum(den) = 0 are dropped."""
    num = np.asarray(num, dtype=np.float64)
    den = np.ones(num.shape) if den is None else np.asarray(den, dtype=np.float64)
    tot = bootstrap_totals(clusters, [num, den], n_boot, seed)
    return percentile_interval(_ratio(tot[:, 0], tot[:, 1]), level)


def accuracy_split_intervals(
    clusters: Sequence | np.ndarray,
    bt: Sequence | np.ndarray,
    ok: Sequence | np.ndarray,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Bootstrap-over-problems intervals of ``accuracy_difference`` and ``accuracy_lift`` (one set of
    draws; identical to ``cluster_bootstrap`` of those statistics with the same seed): ``{"difference":
    (lo, hi), "lift": (lo, hi)}``; replicates where a side is empty (or the lift's denominator is 0) are
    dropped, (nan, nan) when none is left."""
    b = np.asarray(bt, dtype=bool)
    k = np.asarray(ok, dtype=np.float64)
    tot = bootstrap_totals(clusters, [k * b, b, k * ~b, ~b], n_boot, seed)
    with_bt, without = _ratio(tot[:, 0], tot[:, 1]), _ratio(tot[:, 2], tot[:, 3])
    lift = np.where(without != 0, _ratio(with_bt, without), np.nan)
    return {
        "difference": percentile_interval(with_bt - without, level),
        "lift": percentile_interval(lift, level),
    }


def clustered_mean_interval(
    values: Sequence[float] | np.ndarray, clusters: Sequence | np.ndarray
) -> tuple[float, float, float, float]:
    """(mean, sample std over events (n-1; 0 when n < 2), 95% interval low, high) of a mean over events
    that come from ``clusters`` (problems): mean +/- t(G-1) x SE, SE^2 = G / (G-1) x sum_g (S_g - n_g x
    mean)^2 / n^2 (the CR1 cluster-robust variance; S_g, n_g: sum and count of problem g's events).

    Events of one problem add no independent information: duplicating them does not narrow the
    interval. With one event per problem this is ``mean_interval``'s t-interval exactly. The interval is
    undefined (nan) with events from fewer than 2 problems (no between-problem spread to estimate)."""
    x = np.asarray(values, dtype=np.float64)
    labels = np.asarray(clusters)
    if labels.shape != x.shape:
        raise ValueError("`clusters` needs one label per value")
    n = x.size
    if n == 0:
        return (float("nan"),) * 4
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    _, inv = np.unique(labels, return_inverse=True)
    g = int(inv.max()) + 1
    if g < 2:
        return mean, std, float("nan"), float("nan")
    resid = np.bincount(inv, weights=x - mean, minlength=g)
    half = t_quantile_975(g - 1) * math.sqrt(g / (g - 1) * float(np.sum(resid**2))) / n
    return mean, std, mean - half, mean + half


def problem_of(event_key: str) -> str:
    """The problem (example_id) of an event key ``variant/example_id/sample_id``
    (``onset_analysis.probes``); a key of any other form is its own problem."""
    parts = event_key.rsplit("/", 2)
    return parts[1] if len(parts) == 3 else event_key


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
