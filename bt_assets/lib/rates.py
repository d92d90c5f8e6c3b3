"""Grouped BT rates and accuracies with 95% intervals clustered by problem, and the accuracy-vs-
backtracking summary.

One accuracy denominator everywhere: ``accuracy`` = correct / n, n = all rows of the group (a null
``is_correct``, no answer or not gradable, counts as not correct); ``bt_rate`` = rows with
``has_backtracking_strict`` / n. Every rate carries a 95% percentile bootstrap interval over problems
(``example_id``; the samples of one problem are correlated, so rows are not independent) as
``<name>_lo`` / ``<name>_hi`` (the naming scheme of ``bt_assets/lib/README.md``), ``n_boot``
replicates drawn with ``seed`` (same seed, same interval). Degenerate groups: n = 0 gives nan; rows of
a single problem, or all-0 / all-1 outcomes, give a zero-width interval at the rate (every replicate
has the same rate), from which ``stats.Evidence`` makes no claim.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from bt_assets.lib.stats import N_BOOT, accuracy_split_intervals, bootstrap_totals, percentile_interval

BT, OK = "has_backtracking_strict", "is_correct"

RATE_SCHEMA = {
    "n": pl.Int64,
    "n_problems": pl.Int64,
    "bt_count": pl.Int64,
    "bt_rate": pl.Float64,
    "bt_rate_lo": pl.Float64,
    "bt_rate_hi": pl.Float64,
    "correct": pl.Int64,
    "accuracy": pl.Float64,
    "accuracy_lo": pl.Float64,
    "accuracy_hi": pl.Float64,
}


def rate_row(
    rows: pl.DataFrame, bt: str = BT, ok: str = OK, *, seed: int = 0, n_boot: int = N_BOOT
) -> dict[str, int | float]:
    """The ``RATE_SCHEMA`` columns over ``rows`` (columns ``example_id``, ``bt``, ``ok``): counts, rates
    over n (nan when n = 0) and their 95% percentile bootstrap intervals over problems (one set of
    ``n_boot`` draws with ``seed`` for both rates)."""
    n = rows.height
    problems = rows["example_id"].to_numpy()
    hits = [rows[c].fill_null(False).cast(pl.Float64).to_numpy() for c in (bt, ok)]
    k_bt, k_ok = (int(h.sum()) for h in hits)
    tot = bootstrap_totals(problems, [np.ones(n), *hits], n_boot, seed)
    with np.errstate(all="ignore"):
        (bt_lo, bt_hi), (acc_lo, acc_hi) = (percentile_interval(tot[:, j] / tot[:, 0]) for j in (1, 2))
    return {
        "n": n,
        "n_problems": int(np.unique(problems).size),
        "bt_count": k_bt,
        "bt_rate": k_bt / n if n else float("nan"),
        "bt_rate_lo": bt_lo,
        "bt_rate_hi": bt_hi,
        "correct": k_ok,
        "accuracy": k_ok / n if n else float("nan"),
        "accuracy_lo": acc_lo,
        "accuracy_hi": acc_hi,
    }


def group_rates(
    view: pl.DataFrame, by: str, order: Sequence[str] | None = None, *, seed: int = 0, n_boot: int = N_BOOT
) -> pl.DataFrame:
    """Per value of ``by``: the ``RATE_SCHEMA`` columns (n, n_problems, BT count/rate, correct/accuracy =
    correct / n, 95% bootstrap-over-problems intervals ``bt_rate_lo/_hi``, ``accuracy_lo/_hi`` with
    ``n_boot`` replicates and ``seed``; see ``rate_row``).

    ``view`` has ``example_id`` and the original column names (``has_backtracking_strict``,
    ``is_correct``) filled from whichever detection/grading mode the caller chose. Groups follow
    ``order`` (config order)."""
    values = list(order) if order is not None else sorted(set(view[by].to_list()))
    rows = [{by: v, **rate_row(view.filter(pl.col(by) == v), seed=seed, n_boot=n_boot)} for v in values]
    return pl.DataFrame(rows, schema={by: pl.String, **RATE_SCHEMA})


def bt_accuracy_summary(view: pl.DataFrame, seed: int, n_boot: int = N_BOOT) -> dict:
    """Accuracy with vs without backtracking over ``view`` (baseline rows), for the figures and report.

    Returns ``{"accuracy_by_bt": rows, "lift": lift, "summary": summary}``. ``rows`` are the two
    ``group_rates`` rows (``group`` = "with backtracking" / "without backtracking"; accuracy = correct /
    rows of the group). ``summary`` holds the counts (``n``, ``n_problems``, ``n_bt``, ``n_bt_problems``),
    ``bt_rate`` and ``accuracy`` over all rows, ``acc_with_bt`` / ``acc_without_bt``, ``lift`` =
    acc_with_bt / acc_without_bt (None when undefined) and ``difference`` = acc_with_bt - acc_without_bt,
    each with ``_lo/_hi``: every interval is a percentile 95% bootstrap over problems (``example_id``),
    ``n_boot`` replicates drawn with ``seed``."""
    labelled = view.with_columns(
        pl.when(pl.col(BT))
        .then(pl.lit("with backtracking"))
        .otherwise(pl.lit("without backtracking"))
        .alias("group")
    )
    rows = group_rates(
        labelled, "group", ["with backtracking", "without backtracking"], seed=seed, n_boot=n_boot
    )
    with_bt, without = rows.row(0, named=True), rows.row(1, named=True)
    a_bt, a_nb = with_bt["accuracy"], without["accuracy"]
    lift = a_bt / a_nb if a_nb and a_nb == a_nb and a_bt == a_bt else None
    split = accuracy_split_intervals(
        view["example_id"].to_numpy(),
        view[BT].fill_null(False).cast(pl.Boolean).to_numpy(),
        view[OK].fill_null(False).cast(pl.Float64).to_numpy(),
        n_boot,
        seed,
    )
    total = rate_row(view, seed=seed, n_boot=n_boot)
    bt_rows = view.filter(pl.col(BT).fill_null(False))
    summary = {
        "n": total["n"],
        "n_problems": total["n_problems"],
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
        "lift_lo": split["lift"][0],
        "lift_hi": split["lift"][1],
        "difference": a_bt - a_nb,
        "difference_lo": split["difference"][0],
        "difference_hi": split["difference"][1],
    }
    return {"accuracy_by_bt": rows.to_dicts(), "lift": lift, "summary": summary}
