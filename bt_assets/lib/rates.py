"""Grouped BT rates and accuracies with Wilson 95% intervals, and the accuracy-vs-backtracking summary.

One accuracy denominator everywhere: ``accuracy`` = correct / n, n = all rows of the group (a null
``is_correct``, no answer or not gradable, counts as not correct); ``bt_rate`` = rows with
``has_backtracking_strict`` / n. Every rate carries its Wilson score 95% interval as ``<name>_lo`` /
``<name>_hi`` (the naming scheme of ``bt_assets/lib/README.md``); undefined values (n = 0) are nan.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from bt_assets.lib.stats import accuracy_difference, accuracy_lift, cluster_bootstrap, wilson

RATE_SCHEMA = {
    "n": pl.Int64,
    "bt_count": pl.Int64,
    "bt_rate": pl.Float64,
    "bt_rate_lo": pl.Float64,
    "bt_rate_hi": pl.Float64,
    "correct": pl.Int64,
    "accuracy": pl.Float64,
    "accuracy_lo": pl.Float64,
    "accuracy_hi": pl.Float64,
}


def rate_row(n: int, bt_count: int, correct: int) -> dict[str, int | float]:
    """The ``RATE_SCHEMA`` columns for ``bt_count`` BT rows and ``correct`` correct rows out of ``n``:
    rates over n (nan when n = 0) with Wilson score 95% intervals."""
    bt_lo, bt_hi = wilson(bt_count, n)
    acc_lo, acc_hi = wilson(correct, n)
    return {
        "n": n,
        "bt_count": bt_count,
        "bt_rate": bt_count / n if n else float("nan"),
        "bt_rate_lo": bt_lo,
        "bt_rate_hi": bt_hi,
        "correct": correct,
        "accuracy": correct / n if n else float("nan"),
        "accuracy_lo": acc_lo,
        "accuracy_hi": acc_hi,
    }


def group_rates(view: pl.DataFrame, by: str, order: Sequence[str] | None = None) -> pl.DataFrame:
    """Per value of ``by``: the ``RATE_SCHEMA`` columns (n, BT count/rate, correct/accuracy = correct / n,
    Wilson 95% intervals ``bt_rate_lo/_hi``, ``accuracy_lo/_hi``).

    ``view`` has the original column names (``has_backtracking_strict``, ``is_correct``) filled from
    whichever detection/grading mode the caller chose. Groups follow ``order`` (config order)."""
    values = list(order) if order is not None else sorted(set(view[by].to_list()))
    rows = []
    for v in values:
        g = view.filter(pl.col(by) == v)
        k_bt = int(g["has_backtracking_strict"].sum()) if g.height else 0
        k_ok = int(g["is_correct"].fill_null(False).sum()) if g.height else 0
        rows.append({by: v, **rate_row(g.height, k_bt, k_ok)})
    return pl.DataFrame(rows, schema={by: pl.String, **RATE_SCHEMA})


def bt_accuracy_summary(view: pl.DataFrame, seed: int) -> dict:
    """Accuracy with vs without backtracking over ``view`` (baseline rows), for the figures and report.

    Returns ``{"accuracy_by_bt": rows, "lift": lift, "summary": summary}``. ``rows`` are the two
    ``group_rates`` rows (``group`` = "with backtracking" / "without backtracking"; accuracy = correct /
    rows of the group, Wilson intervals). ``summary`` holds the counts (``n``, ``n_problems``, ``n_bt``,
    ``n_bt_problems``), ``bt_rate`` and ``accuracy`` over all rows, ``acc_with_bt`` / ``acc_without_bt``,
    each with ``_lo/_hi`` (Wilson 95%), and ``lift`` = acc_with_bt / acc_without_bt (None when undefined)
    and ``difference`` = acc_with_bt - acc_without_bt with ``_lo/_hi`` from a percentile 95% bootstrap
    over problems (``example_id``)."""
    labelled = view.with_columns(
        pl.when(pl.col("has_backtracking_strict"))
        .then(pl.lit("with backtracking"))
        .otherwise(pl.lit("without backtracking"))
        .alias("group")
    )
    rows = group_rates(labelled, "group", ["with backtracking", "without backtracking"])
    with_bt, without = rows.row(0, named=True), rows.row(1, named=True)
    a_bt, a_nb = with_bt["accuracy"], without["accuracy"]
    lift = a_bt / a_nb if a_nb and a_nb == a_nb and a_bt == a_bt else None
    arrays = [
        view["has_backtracking_strict"].cast(pl.Boolean).to_numpy(),
        view["is_correct"].fill_null(False).cast(pl.Float64).to_numpy(),
    ]
    problems = view["example_id"].to_numpy()
    lift_lo, lift_hi = cluster_bootstrap(problems, arrays, accuracy_lift, seed=seed)
    diff_lo, diff_hi = cluster_bootstrap(problems, arrays, accuracy_difference, seed=seed)
    total = rate_row(
        view.height,
        int(view["has_backtracking_strict"].sum()),
        int(view["is_correct"].fill_null(False).sum()),
    )
    bt_rows = view.filter(pl.col("has_backtracking_strict").fill_null(False))
    summary = {
        "n": total["n"],
        "n_problems": view["example_id"].n_unique(),
        "n_bt": bt_rows.height,
        "n_bt_problems": bt_rows["example_id"].n_unique(),
        **{
            k: total[k]
            for k in ("bt_rate", "bt_rate_lo", "bt_rate_hi", "accuracy", "accuracy_lo", "accuracy_hi")
        },
        "acc_with_bt": a_bt,
        "acc_with_bt_lo": with_bt["accuracy_lo"],
        "acc_with_bt_hi": with_bt["accuracy_hi"],
        "acc_without_bt": a_nb,
        "acc_without_bt_lo": without["accuracy_lo"],
        "acc_without_bt_hi": without["accuracy_hi"],
        "lift": lift,
        "lift_lo": lift_lo,
        "lift_hi": lift_hi,
        "difference": a_bt - a_nb,
        "difference_lo": diff_lo,
        "difference_hi": diff_hi,
    }
    return {"accuracy_by_bt": rows.to_dicts(), "lift": lift, "summary": summary}
