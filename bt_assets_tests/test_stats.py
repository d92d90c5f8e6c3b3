"""Wilson intervals, the problem-level (cluster) bootstrap, and the rate tables built on them
(``rates.group_rates`` / ``bt_accuracy_summary``, ``sweep_stats.cell_stats`` / ``sweep_tables``)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from bt_assets.lib.rates import RATE_SCHEMA, bt_accuracy_summary, group_rates
from bt_assets.lib.stats import (
    accuracy_difference,
    accuracy_lift,
    accuracy_with_without,
    cluster_bootstrap,
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


def test_group_rates_counts_rates_and_wilson_intervals():
    df = group_rates(_view(), "variant", ["a", "b", "c"])
    assert df.columns == ["variant", *RATE_SCHEMA]
    a, b, c = df.rows(named=True)
    # a: problems 0-5 (both rows correct for 0-2, BT row only for 3-5): 6 BT of 12, 9 correct of 12
    assert (a["n"], a["bt_count"], a["bt_rate"], a["correct"], a["accuracy"]) == (12, 6, 0.5, 9, 0.75)
    assert _r4(a["bt_rate_lo"], a["bt_rate_hi"]) == _r4(*wilson(6, 12))
    assert _r4(a["accuracy_lo"], a["accuracy_hi"]) == _r4(*wilson(9, 12))
    # b: problems 6-9, no row correct, one null is_correct (denominator still all 8 rows)
    assert (b["n"], b["bt_count"], b["correct"], b["accuracy"]) == (8, 4, 0, 0.0)
    assert _r4(b["accuracy_lo"], b["accuracy_hi"]) == (0.0, 0.3244)
    assert c["n"] == 0 and math.isnan(c["bt_rate"]) and math.isnan(c["accuracy_lo"])


def test_bt_accuracy_summary_keys_and_values():
    out = bt_accuracy_summary(_view(), seed=0)
    assert set(out) == {"accuracy_by_bt", "lift", "summary"}  # no lift_ci: read summary["lift_lo/_hi"]
    s = out["summary"]
    assert (s["n"], s["n_problems"], s["n_bt"], s["n_bt_problems"]) == (20, 10, 10, 10)
    assert (s["bt_rate"], s["accuracy"]) == (0.5, 0.45)
    assert _r4(s["bt_rate_lo"], s["bt_rate_hi"]) == (0.2993, 0.7007)
    assert _r4(s["accuracy_lo"], s["accuracy_hi"]) == (0.2582, 0.6579)
    assert (s["acc_with_bt"], s["acc_without_bt"]) == (0.6, 0.3)
    assert _r4(s["acc_with_bt_lo"], s["acc_with_bt_hi"]) == (0.3127, 0.8318)
    assert _r4(s["acc_without_bt_lo"], s["acc_without_bt_hi"]) == (0.1078, 0.6032)
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
    assert _r4(st["bt_rate_lo"], st["bt_rate_hi"]) == (0.0456, 0.6994)
    assert _r4(st["accuracy_lo"], st["accuracy_hi"]) == (0.15, 0.85)
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
    assert out["baseline"]["bt_rate"] == 0.75 and out["subset"][1]["bt_rate_hi"] == wilson(1, 4)[1]
    best = out["best_tradeoff"]
    assert best["cell"] == "c" and best["relative_bt_reduction"] == pytest.approx(2 / 3)
    assert best["accuracy_floor"] == 0.25  # 0.5 x baseline accuracy 2/4
