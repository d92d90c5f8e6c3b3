"""Grouped BT rates and accuracies with Wilson 95% intervals (one accuracy denominator: all rows)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from bt_assets.lib.stats import wilson

RATE_SCHEMA = {"n": pl.Int64, "bt_count": pl.Int64, "bt_rate": pl.Float64, "bt_lo": pl.Float64,
               "bt_hi": pl.Float64, "correct": pl.Int64, "accuracy": pl.Float64, "acc_lo": pl.Float64,
               "acc_hi": pl.Float64}


def group_rates(view: pl.DataFrame, by: str, order: Sequence[str] | None = None) -> pl.DataFrame:
    """Per value of ``by``: n, BT count/rate, correct/accuracy (correct / n), Wilson intervals.

    ``view`` has the original column names (``has_backtracking_strict``, ``is_correct``) filled from
    whichever detection/grading mode the caller chose. Groups follow ``order`` (config order)."""
    values = list(order) if order is not None else sorted(set(view[by].to_list()))
    rows = []
    for v in values:
        g = view.filter(pl.col(by) == v)
        n, k_bt = g.height, int(g["has_backtracking_strict"].sum()) if g.height else 0
        k_ok = int(g["is_correct"].fill_null(False).sum()) if g.height else 0
        bt_lo, bt_hi = wilson(k_bt, n)
        acc_lo, acc_hi = wilson(k_ok, n)
        rows.append({by: v, "n": n, "bt_count": k_bt, "bt_rate": k_bt / n if n else float("nan"),
                     "bt_lo": bt_lo, "bt_hi": bt_hi, "correct": k_ok,
                     "accuracy": k_ok / n if n else float("nan"), "acc_lo": acc_lo, "acc_hi": acc_hi})
    return pl.DataFrame(rows, schema={by: pl.String, **RATE_SCHEMA})


def lift_bootstrap(problem: np.ndarray, bt: np.ndarray, ok: np.ndarray, n_boot: int = 2000, seed: int = 0
                   ) -> tuple[float, float, float, float]:
    """Accuracy with BT / without BT (pooled over rows) and the difference, with 95% intervals from a
    bootstrap that resamples problems. Returns (lift_lo, lift_hi, diff_lo, diff_hi)."""
    if problem.size == 0:
        return (float("nan"),) * 4
    ids, inv = np.unique(problem, return_inverse=True)
    m = ids.size
    n_bt = np.bincount(inv, weights=bt, minlength=m)
    ok_bt = np.bincount(inv, weights=bt * ok, minlength=m)
    n_nb = np.bincount(inv, weights=1 - bt, minlength=m)
    ok_nb = np.bincount(inv, weights=(1 - bt) * ok, minlength=m)
    draws = np.random.default_rng(seed).integers(0, m, size=(n_boot, m))
    with np.errstate(divide="ignore", invalid="ignore"):
        acc_bt = ok_bt[draws].sum(1) / n_bt[draws].sum(1)
        acc_nb = ok_nb[draws].sum(1) / n_nb[draws].sum(1)
        lift, diff = acc_bt / acc_nb, acc_bt - acc_nb
    lift, diff = lift[np.isfinite(lift)], diff[np.isfinite(diff)]
    lo_l, hi_l = np.percentile(lift, [2.5, 97.5]) if lift.size else (np.nan, np.nan)
    lo_d, hi_d = np.percentile(diff, [2.5, 97.5]) if diff.size else (np.nan, np.nan)
    return float(lo_l), float(hi_l), float(lo_d), float(hi_d)


def bt_accuracy_summary(view: pl.DataFrame, seed: int) -> dict:
    """Accuracy with vs without backtracking over ``view`` (baseline rows), the lift and difference with
    problem-bootstrap intervals; rows ready for the figures and the report."""
    labelled = view.with_columns(pl.when(pl.col("has_backtracking_strict")).then(pl.lit("with backtracking"))
                                 .otherwise(pl.lit("without backtracking")).alias("group"))
    rows = group_rates(labelled, "group", ["with backtracking", "without backtracking"])
    acc = dict(zip(rows["group"], rows["accuracy"], strict=True))
    a_bt, a_nb = acc["with backtracking"], acc["without backtracking"]
    lift = a_bt / a_nb if a_nb and a_nb == a_nb and a_bt == a_bt else None
    lo_l, hi_l, lo_d, hi_d = lift_bootstrap(
        view["example_id"].to_numpy(), view["has_backtracking_strict"].cast(pl.Float64).to_numpy(),
        view["is_correct"].fill_null(False).cast(pl.Float64).to_numpy(), seed=seed)
    total = group_rates(view.with_columns(pl.lit("all").alias("all")), "all", ["all"]).row(0, named=True)
    summary = {"n": total["n"], "bt_rate": total["bt_rate"], "bt_lo": total["bt_lo"], "bt_hi": total["bt_hi"],
               "accuracy": total["accuracy"], "acc_lo": total["acc_lo"], "acc_hi": total["acc_hi"],
               "acc_with_bt": a_bt, "acc_with_lo": rows["acc_lo"][0], "acc_with_hi": rows["acc_hi"][0],
               "acc_without_bt": a_nb, "acc_without_lo": rows["acc_lo"][1], "acc_without_hi": rows["acc_hi"][1],
               "lift": lift, "lift_lo": lo_l, "lift_hi": hi_l,
               "difference": a_bt - a_nb, "difference_lo": lo_d, "difference_hi": hi_d}
    return {"accuracy_by_bt": rows.rename({"group": "group"}).to_dicts(), "lift": lift,
            "lift_ci": (lo_l, hi_l), "summary": summary}
