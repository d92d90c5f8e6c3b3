"""Wilson intervals, the problem-level (cluster) bootstrap, problem-clustered means over events, and the
rate tables built on them (``rates.group_rates`` / ``bt_accuracy_summary``, ``sweep_stats.cell_stats`` /
``sweep_tables`` / ``continuation_summary``)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from bt_assets.lib.rates import RATE_SCHEMA, TRUNCATION_SCHEMA, bt_accuracy_summary, group_rates
from bt_assets.lib.stats import (
    N_BOOT,
    Evidence,
    accuracy_difference,
    accuracy_lift,
    accuracy_split_intervals,
    accuracy_with_without,
    bootstrap_note,
    cluster_bootstrap,
    cluster_ratio_interval,
    clustered_mean_interval,
    mean_interval,
    problem_of,
    wilson,
)
from bt_assets.lib.sweep_stats import cell_stats, sweep_tables
from bt_assets.lib.sweeps import SweepCell


def test_wilson_known_values():
    lo, hi = wilson(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    lo, hi = wilson(582, 2452)
    assert lo < 582 / 2452 < hi and hi - lo < 0.04
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    assert all(math.isnan(x) for x in wilson(0, 0))
    lo99, hi99 = wilson(5, 10, z=2.576)
    assert lo99 < 0.2366 and hi99 > 0.7634


def test_wilson_symmetry():
    lo, hi = wilson(3, 20)
    lo2, hi2 = wilson(17, 20)
    assert lo == pytest.approx(1 - hi2) and hi == pytest.approx(1 - lo2)


def test_accuracy_helpers():
    bt = np.array([True, True, False, False])
    ok = np.array([1.0, 0.0, 1.0, 1.0])
    assert accuracy_with_without(bt, ok) == (0.5, 1.0)
    assert accuracy_difference(bt, ok) == -0.5
    assert accuracy_lift(bt, ok) == 0.5
    assert math.isnan(accuracy_lift(bt, np.zeros(4)))
    assert math.isnan(accuracy_difference(np.ones(4, bool), ok))


def _data(seed: int = 0, problems: int = 100, per: int = 6):
    rng = np.random.default_rng(seed)
    cl = np.repeat(np.arange(problems), per)
    p = rng.random(problems)[cl]  # problem difficulty shared by its samples
    bt = rng.random(cl.size) < 0.6
    ok = (rng.random(cl.size) < p).astype(float)
    return cl, bt, ok


def test_cluster_bootstrap_deterministic_and_covers_estimate():
    cl, bt, ok = _data()
    a = cluster_bootstrap(cl, [bt, ok], accuracy_difference, n_boot=500, seed=3)
    b = cluster_bootstrap(cl, [bt, ok], accuracy_difference, n_boot=500, seed=3)
    c = cluster_bootstrap(cl, [bt, ok], accuracy_difference, n_boot=500, seed=4)
    assert a == b and a != c
    est = accuracy_difference(bt, ok)
    assert a[0] < est < a[1]


def test_cluster_bootstrap_resamples_whole_problems():
    # every row of a problem is identical: the cluster interval must be wider than a row-level one
    rng = np.random.default_rng(1)
    cl = np.repeat(np.arange(40), 10)
    x = rng.random(40)[cl]
    lo_c, hi_c = cluster_bootstrap(cl, [x], np.mean, n_boot=800, seed=0)
    lo_r, hi_r = cluster_bootstrap(np.arange(x.size), [x], np.mean, n_boot=800, seed=0)
    assert (hi_c - lo_c) > 2 * (hi_r - lo_r)
    # a resample keeps problem sizes: with unequal sizes the row count still varies per replicate
    sizes = cluster_bootstrap(np.array([0, 0, 0, 1]), [np.ones(4)], len, n_boot=200, seed=0)
    assert sizes[0] >= 2 and sizes[1] <= 6


def test_cluster_bootstrap_string_labels_and_level():
    cl, bt, ok = _data(problems=30)
    labels = np.array([f"p{i}" for i in cl])
    wide = cluster_bootstrap(labels, [bt, ok], accuracy_lift, n_boot=400, seed=0, level=0.99)
    narrow = cluster_bootstrap(labels, [bt, ok], accuracy_lift, n_boot=400, seed=0, level=0.5)
    assert wide[0] <= narrow[0] <= narrow[1] <= wide[1]


def test_cluster_bootstrap_degenerate_cases():
    nan2 = cluster_bootstrap([], [[], []], accuracy_lift)
    assert all(math.isnan(x) for x in nan2)
    # nobody without backtracking: the lift is undefined in every replicate
    nan2 = cluster_bootstrap([0, 1], [[True, True], [1.0, 0.0]], accuracy_lift, n_boot=50)
    assert all(math.isnan(x) for x in nan2)
    # a statistic that divides by zero in some replicates: those are dropped, no exception
    lo, hi = cluster_bootstrap([0, 1, 2], [[0.0, 0.0, 1.0]], lambda x: 1 / x.sum(), n_boot=200, seed=0)
    assert lo >= 0.25 and hi <= 1.0
    with pytest.raises(ValueError):
        cluster_bootstrap([0, 1], [[1.0]], np.mean)


# --- rate tables ------------------------------------------------------------------------------------


def _view() -> pl.DataFrame:
    """20 rows, 2 per problem (one with BT, one without): 6/10 correct with BT, 3/10 without (one of
    those 10 has no gradable answer, counted as not correct)."""
    return pl.DataFrame(
        {
            "example_id": [i for i in range(10) for _ in range(2)],
            "variant": ["a"] * 12 + ["b"] * 8,
            "has_backtracking_strict": [True, False] * 10,
            "is_correct": [v for i in range(10) for v in (i < 6, None if i == 9 else i < 3)],
        }
    )


def _r4(*xs: float) -> tuple[float, ...]:
    return tuple(round(x, 4) for x in xs)


def _boot_mean(view: pl.DataFrame, col: str, seed: int = 0) -> tuple[float, float]:
    """The reference: ``cluster_bootstrap`` (one replicate at a time) of the mean of ``col`` (null = 0)."""
    x = view[col].fill_null(False).cast(pl.Float64).to_numpy()
    return cluster_bootstrap(view["example_id"].to_numpy(), [x], np.mean, seed=seed)


def test_group_rates_counts_rates_and_problem_bootstrap_intervals():
    view = _view()
    df = group_rates(view, "variant", ["a", "b", "c"])
    assert df.columns == ["variant", *RATE_SCHEMA, *TRUNCATION_SCHEMA]
    a, b, c = df.rows(named=True)
    # a: problems 0-5 (both rows correct for 0-2, BT row only for 3-5): 6 BT of 12, 9 correct of 12
    assert (a["n"], a["bt_count"], a["bt_rate"], a["correct"], a["accuracy"]) == (12, 6, 0.5, 9, 0.75)
    assert a["n_problems"] == 6
    # every problem backtracks in exactly 1 of its 2 rows: no between-problem spread, zero width
    assert (a["bt_rate_lo"], a["bt_rate_hi"]) == (0.5, 0.5)
    rows_a = view.filter(pl.col("variant") == "a")
    assert (a["accuracy_lo"], a["accuracy_hi"]) == _boot_mean(rows_a, "is_correct")
    assert _r4(a["accuracy_lo"], a["accuracy_hi"]) == (0.5833, 0.9167)
    # b: problems 6-9, no row correct, one null is_correct (denominator still all 8 rows): all-0 -> [0, 0]
    assert (b["n"], b["bt_count"], b["correct"], b["accuracy"]) == (8, 4, 0, 0.0)
    assert (b["accuracy_lo"], b["accuracy_hi"]) == (0.0, 0.0)
    assert c["n"] == 0 and c["n_problems"] == 0 and math.isnan(c["bt_rate"]) and math.isnan(c["accuracy_lo"])
    assert group_rates(view, "variant", ["a"], seed=3).row(0, named=True)["accuracy_lo"] == pytest.approx(
        _boot_mean(rows_a, "is_correct", seed=3)[0]
    )


def test_bt_accuracy_summary_keys_and_values():
    out = bt_accuracy_summary(_view(), seed=0)
    assert set(out) == {"accuracy_by_bt", "lift", "summary"}  # no lift_ci: read summary["lift_lo/_hi"]
    s = out["summary"]
    assert (s["n"], s["n_problems"], s["n_bt"], s["n_bt_problems"]) == (20, 10, 10, 10)
    assert (s["bt_rate"], s["accuracy"]) == (0.5, 0.45)
    assert (s["bt_rate_lo"], s["bt_rate_hi"]) == (0.5, 0.5)  # 1 of 2 rows per problem: zero width
    assert (s["accuracy_lo"], s["accuracy_hi"]) == _boot_mean(_view(), "is_correct")
    assert _r4(s["accuracy_lo"], s["accuracy_hi"]) == (0.2, 0.7)
    assert (s["acc_with_bt"], s["acc_without_bt"]) == (0.6, 0.3)
    bt = pl.col("has_backtracking_strict")
    assert (s["acc_with_bt_lo"], s["acc_with_bt_hi"]) == _boot_mean(_view().filter(bt), "is_correct")
    assert (s["acc_without_bt_lo"], s["acc_without_bt_hi"]) == _boot_mean(_view().filter(~bt), "is_correct")
    assert _r4(s["acc_with_bt_lo"], s["acc_with_bt_hi"]) == (0.3, 0.9)
    assert _r4(s["acc_without_bt_lo"], s["acc_without_bt_hi"]) == (0.0, 0.6)
    assert s["lift"] == out["lift"] == 2.0 and s["difference"] == pytest.approx(0.3)
    assert s["lift_lo"] < 2.0 < s["lift_hi"] and s["difference_lo"] < 0.3 < s["difference_hi"]
    assert [r["group"] for r in out["accuracy_by_bt"]] == ["with backtracking", "without backtracking"]
    assert out["accuracy_by_bt"][1]["accuracy_hi"] == s["acc_without_bt_hi"]
    assert bt_accuracy_summary(_view(), seed=0) == out


def _cell(bt: list[bool], ok: list[bool | None], finish: list[str], condition: str = "c") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "example_id": [0, 0, 1, 2],
            "sample_id": [0, 1, 0, 0],
            "condition": [condition] * 4,
            "has_backtracking_strict": bt,
            "onset_phrase": ["Wait" if b else None for b in bt],
            "is_correct": ok,
            "completion_tokens": [100, 200, 300, 400],
            "finish_reason": finish,
        },
        schema_overrides={"is_correct": pl.Boolean},
    )


BASE = _cell([True, True, True, False], [True, False, True, None], ["stop"] * 4, "base")
CELL = _cell([False, True, False, False], [True, True, None, False], ["length", "stop", "stop", "stop"])
COLS = ("has_backtracking_strict", "is_correct")


def test_cell_stats_rates_and_paired_change():
    base = BASE.select("example_id", "sample_id", *COLS)
    st = cell_stats(CELL, base, *COLS, seed=0)
    assert (st["n"], st["bt_count"], st["bt_rate"], st["correct"], st["accuracy"]) == (4, 1, 0.25, 2, 0.5)
    assert st["n_problems"] == 3
    # bootstrap over the 3 problems (problem 0 has 2 rows), not Wilson over 4 rows
    assert (st["bt_rate_lo"], st["bt_rate_hi"]) == _boot_mean(CELL, "has_backtracking_strict")
    assert (st["accuracy_lo"], st["accuracy_hi"]) == _boot_mean(CELL, "is_correct")
    assert _r4(st["bt_rate_lo"], st["bt_rate_hi"]) == (0.0, 0.5)
    assert _r4(st["accuracy_lo"], st["accuracy_hi"]) == (0.0, 1.0)
    assert (st["mean_tokens"], st["truncated_share"]) == (250.0, 0.25)
    # per pair (cell - base): BT (-1, 0, -1, 0), correct (0, +1, -1, 0); null = not correct
    assert (st["delta_bt"], st["delta_acc"]) == (-0.5, 0.0)
    assert st["delta_bt_lo"] <= -0.5 <= st["delta_bt_hi"] and st["delta_acc_lo"] <= 0 <= st["delta_acc_hi"]
    assert (st["n_pairs"], st["bt_pairs"], st["bt_pair_problems"]) == (4, 3, 2)


def test_sweep_tables_rows_name_n_components():
    cells = [
        SweepCell("base", "baseline", 1.0, ("scale", "subset")),
        SweepCell("c", "late", 0.0, ("subset",)),
    ]
    out = sweep_tables(pl.concat([BASE, CELL]), cells, {"c": 3}, "seed_compatible", "seed_compatible", 0.5, 0)
    assert [(r["cell"], r["n_components"]) for r in out["cells"]] == [("base", 0), ("c", 3)]
    assert "num_components" not in out["cells"][1]
    assert out["baseline"]["bt_rate"] == 0.75
    assert out["subset"][1]["bt_rate_hi"] == _boot_mean(CELL, "has_backtracking_strict")[1]
    assert out["interval_method"] == bootstrap_note(N_BOOT, 0)
    assert (
        out["interval_method"]
        == "95% intervals: percentile bootstrap over problems (2000 replicates, seed 0)"
    )
    best = out["best_tradeoff"]
    # 3 pairs with a BT event from 2 problems: below the evidence floor, so no cell is a trade-off
    assert best["cell"] is None
    assert "too few to test: 3 pairs with a BT event from 2 problems" in best["reason"]
    assert best["accuracy_floor"] == 0.25  # 0.5 x baseline accuracy 2/4


# --- problem-clustered intervals (issue 13, item 1) ---------------------------------------------------


def _all_or_nothing(problems: int = 60, per: int = 6, seed: int = 0):
    """Problems whose samples all backtrack or all do not (the extreme of within-problem correlation)."""
    rng = np.random.default_rng(seed)
    cl = np.repeat(np.arange(problems), per)
    return cl, (rng.random(problems) < 0.6)[cl].astype(float)


def test_vectorised_bootstrap_equals_the_replicate_loop():
    cl, bt, ok = _data(problems=37, per=5)
    for seed in (0, 7):
        assert cluster_ratio_interval(cl, ok, None, 500, seed) == cluster_bootstrap(
            cl, [ok], np.mean, 500, seed
        )
        split = accuracy_split_intervals(cl, bt, ok, 500, seed)
        assert split["difference"] == cluster_bootstrap(cl, [bt, ok], accuracy_difference, 500, seed)
        assert split["lift"] == cluster_bootstrap(cl, [bt, ok], accuracy_lift, 500, seed)
    # a ratio with its own denominator: accuracy among BT rows = sum(ok * bt) / sum(bt)
    ref = cluster_bootstrap(cl, [ok * bt, bt], lambda a, b: a.sum() / b.sum(), 300, 2)
    assert cluster_ratio_interval(cl, ok * bt, bt, 300, 2) == pytest.approx(ref)


def test_bootstrap_interval_is_deterministic_for_a_seed():
    cl, _, ok = _data()
    labels = np.array([f"p{i}" for i in cl])
    a = cluster_ratio_interval(labels, ok, seed=11)
    assert a == cluster_ratio_interval(labels, ok, seed=11)
    assert a != cluster_ratio_interval(labels, ok, seed=12)
    # rows in any order: the interval depends on the problems and their rows, not on row order
    perm = np.random.default_rng(0).permutation(cl.size)
    assert cluster_ratio_interval(labels[perm], ok[perm], seed=11) == pytest.approx(a)
    view = pl.DataFrame(
        {"example_id": cl, "v": ["x"] * cl.size, "has_backtracking_strict": ok > 0, "is_correct": ok > 0}
    )
    assert group_rates(view, "v", seed=4).equals(group_rates(view, "v", seed=4))
    r = group_rates(view, "v", seed=4).row(0, named=True)
    assert (r["accuracy_lo"], r["accuracy_hi"]) == cluster_ratio_interval(cl, ok, seed=4)


def test_clustering_widens_the_interval_when_problems_are_all_or_nothing():
    cl, hits = _all_or_nothing()
    lo, hi = cluster_ratio_interval(cl, hits, seed=0)
    w_lo, w_hi = wilson(int(hits.sum()), hits.size)
    assert lo < hits.mean() < hi
    # 60 independent problems, not 360 independent rows: about sqrt(6) = 2.4x wider
    assert (hi - lo) > 2.0 * (w_hi - w_lo)
    # one row per problem: the bootstrap over problems is close to Wilson
    lo1, hi1 = cluster_ratio_interval(np.arange(60), hits[::6], seed=0)
    w1 = wilson(int(hits[::6].sum()), 60)
    assert 0.8 < (hi1 - lo1) / (w1[1] - w1[0]) < 1.2


def test_degenerate_rate_intervals_are_zero_width_and_support_no_claim():
    one_problem = np.zeros(6, int)
    mixed = np.array([1.0, 0, 1, 0, 1, 1])
    assert cluster_ratio_interval(one_problem, mixed, seed=0) == (4 / 6, 4 / 6)
    cl = np.repeat(np.arange(10), 3)
    assert cluster_ratio_interval(cl, np.zeros(30), seed=0) == (0.0, 0.0)
    assert cluster_ratio_interval(cl, np.ones(30), seed=0) == (1.0, 1.0)
    assert all(math.isnan(x) for x in cluster_ratio_interval([], [], seed=0))
    assert not Evidence().excludes(4 / 6, 4 / 6, 0.5, events=100, problems=10)
    view = pl.DataFrame(
        {
            "example_id": [3] * 6,
            "g": ["x"] * 6,
            "has_backtracking_strict": mixed > 0,
            "is_correct": [True] * 6,
        }
    )
    r = group_rates(view, "g").row(0, named=True)
    assert (r["n_problems"], r["bt_rate_lo"], r["bt_rate_hi"]) == (1, 4 / 6, 4 / 6)
    assert (r["accuracy_lo"], r["accuracy_hi"]) == (1.0, 1.0)


def test_clustered_mean_equals_the_t_interval_with_one_event_per_problem():
    x = [0.3, 1.7, -0.4, 2.2, 0.9]
    assert clustered_mean_interval(x, ["a", "b", "c", "d", "e"]) == pytest.approx(mean_interval(x))
    mean, std, lo, hi = clustered_mean_interval([1.0, 3.0, 5.0], [7, 7, 7])  # one problem: no interval
    assert (mean, std) == (3.0, 2.0) and math.isnan(lo) and math.isnan(hi)
    assert clustered_mean_interval([2.5], ["a"])[:2] == (2.5, 0.0)
    assert all(math.isnan(v) for v in clustered_mean_interval([], []))
    with pytest.raises(ValueError):
        clustered_mean_interval([1.0, 2.0], ["a"])


def test_duplicated_events_of_a_problem_do_not_narrow_the_mean_interval():
    rng = np.random.default_rng(3)
    x = rng.normal(1.0, 2.0, 12)
    problems = np.arange(12)
    dup_x, dup_p = np.repeat(x, 10), np.repeat(problems, 10)  # every event copied 10x
    _, _, lo, hi = clustered_mean_interval(x, problems)
    _, _, dlo, dhi = clustered_mean_interval(dup_x, dup_p)
    assert (dhi - dlo) == pytest.approx(hi - lo)  # the same 12 problems: the same interval
    _, _, ilo, ihi = mean_interval(dup_x)  # treating the 120 copies as independent events
    assert (ihi - ilo) < 0.4 * (hi - lo)
    # the bootstrap over problems of the mean does not narrow either
    b = cluster_ratio_interval(problems, x, seed=0, n_boot=4000)
    db = cluster_ratio_interval(dup_p, dup_x, seed=0, n_boot=4000)
    assert db == pytest.approx(b)


def test_clustered_mean_interval_agrees_with_the_bootstrap_over_problems():
    """The justification of the t-interval on the clustered standard error for means over events: on
    clustered events (problem effect + noise, 1-6 events per problem) its width is within 20% of the
    percentile bootstrap over problems, and both are well wider than the naive t-interval."""
    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 7, 80)
    problems = np.repeat(np.arange(80), sizes)
    x = rng.normal(0, 1.0, 80)[problems] + rng.normal(0, 0.5, problems.size)
    _, _, lo, hi = clustered_mean_interval(x, problems)
    blo, bhi = cluster_ratio_interval(problems, x, seed=0, n_boot=4000)
    assert 0.85 < (hi - lo) / (bhi - blo) < 1.2
    assert abs((lo + hi) / 2 - (blo + bhi) / 2) < 0.1 * (hi - lo)
    _, _, nlo, nhi = mean_interval(x)
    assert (hi - lo) > 1.3 * (nhi - nlo)


def test_problem_of_event_keys():
    assert problem_of("baseline_think_newline/17/3") == "17"
    assert problem_of("odd/variant/17/3") == "17"
    assert problem_of("a") == "a"


def test_bootstrap_over_200_problems_is_fast():
    import time

    cl = np.repeat(np.arange(200), 18)
    hits = (np.random.default_rng(0).random(cl.size) < 0.68).astype(float)
    start = time.perf_counter()
    for _ in range(5):
        cluster_ratio_interval(cl, hits, seed=0)
    assert (time.perf_counter() - start) / 5 < 0.5  # about 0.02 s per interval here
