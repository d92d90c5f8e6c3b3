"""Grouped BT rates and accuracies with Wilson 95% intervals (one accuracy denominator: all rows)."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from bt_assets.lib.stats import accuracy_difference, accuracy_lift, cluster_bootstrap, wilson

RATE_SCHEMA = {
    "n": pl.Int64,
    "bt_count": pl.Int64,
    "bt_rate": pl.Float64,
    "bt_lo": pl.Float64,
    "bt_hi": pl.Float64,
    "correct": pl.Int64,
    "accuracy": pl.Float64,
    "acc_lo": pl.Float64,
    "acc_hi": pl.Float64,
}


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
        rows.append(
            {
                by: v,
                "n": n,
                "bt_count": k_bt,
                "bt_rate": k_bt / n if n else float("nan"),
                "bt_lo": bt_lo,
                "bt_hi": bt_hi,
                "correct": k_ok,
                "accuracy": k_ok / n if n else float("nan"),
                "acc_lo": acc_lo,
                "acc_hi": acc_hi,
            }
        )
    return pl.DataFrame(rows, schema={by: pl.String, **RATE_SCHEMA})


def bt_accuracy_summary(view: pl.DataFrame, seed: int) -> dict:
    """Accuracy with vs without backtracking over ``view`` (baseline rows), the lift and difference with
    problem-bootstrap intervals; rows ready for the figures and the report."""
    labelled = view.with_columns(
        pl.when(pl.col("has_backtracking_strict"))
        .then(pl.lit("with backtracking"))
        .otherwise(pl.lit("without backtracking"))
        .alias("group")
    )
    rows = group_rates(labelled, "group", ["with backtracking", "without backtracking"])
    acc = dict(zip(rows["group"], rows["accuracy"], strict=True))
    a_bt, a_nb = acc["with backtracking"], acc["without backtracking"]
    lift = a_bt / a_nb if a_nb and a_nb == a_nb and a_bt == a_bt else None
    arrays = [
        view["has_backtracking_strict"].cast(pl.Boolean).to_numpy(),
        view["is_correct"].fill_null(False).cast(pl.Float64).to_numpy(),
    ]
    problems = view["example_id"].to_numpy()
    lo_l, hi_l = cluster_bootstrap(problems, arrays, accuracy_lift, seed=seed)
    lo_d, hi_d = cluster_bootstrap(problems, arrays, accuracy_difference, seed=seed)
    total = group_rates(view.with_columns(pl.lit("all").alias("all")), "all", ["all"]).row(0, named=True)
    bt_rows = view.filter(pl.col("has_backtracking_strict").fill_null(False))
    summary = {
        "n": total["n"],
        "n_problems": view["example_id"].n_unique(),
        "n_bt": bt_rows.height,
        "n_bt_problems": bt_rows["example_id"].n_unique(),
        "bt_rate": total["bt_rate"],
        "bt_lo": total["bt_lo"],
        "bt_hi": total["bt_hi"],
        "accuracy": total["accuracy"],
        "acc_lo": total["acc_lo"],
        "acc_hi": total["acc_hi"],
        "acc_with_bt": a_bt,
        "acc_with_lo": rows["acc_lo"][0],
        "acc_with_hi": rows["acc_hi"][0],
        "acc_without_bt": a_nb,
        "acc_without_lo": rows["acc_lo"][1],
        "acc_without_hi": rows["acc_hi"][1],
        "lift": lift,
        "lift_lo": lo_l,
        "lift_hi": hi_l,
        "difference": a_bt - a_nb,
        "difference_lo": lo_d,
        "difference_hi": hi_d,
    }
    return {"accuracy_by_bt": rows.to_dicts(), "lift": lift, "lift_ci": (lo_l, hi_l), "summary": summary}
