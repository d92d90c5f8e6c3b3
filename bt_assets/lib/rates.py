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
TRUNCATION_SCHEMA = {
    "truncated_share": pl.Float64,
    "n_finished": pl.Int64,
    "accuracy_finished": pl.Float64,
    "mean_tokens": pl.Float64,
    "median_tokens": pl.Float64,
}
FINISH = "finish_reason"


def has_finish_reason(rows: pl.DataFrame) -> bool:
    """Whether ``rows`` record why generation stopped (imported events have no or a null
    ``finish_reason``: how many hit the cap is then unknown)."""
    return FINISH in rows.columns and rows[FINISH].null_count() < rows.height


def truncation_row(rows: pl.DataFrame, ok: str = OK) -> dict[str, int | float | None]:
    """The ``TRUNCATION_SCHEMA`` columns over ``rows``: ``truncated_share`` = completions with
    ``finish_reason == "length"`` (stopped at the token cap) / completions with a recorded finish
    reason; ``n_finished`` = completions that stopped on their own (``finish_reason == "stop"``);
    ``accuracy_finished`` = correct / ``n_finished`` (None when none finished); ``mean_tokens`` /
    ``median_tokens`` of ``completion_tokens`` (generated tokens). Without a finish reason (imported
    events) the first three are None: the share cut at the cap is unknown, not zero."""
    tokens = (
        rows["completion_tokens"] if "completion_tokens" in rows.columns else pl.Series([], dtype=pl.Int64)
    )
    out: dict[str, int | float | None] = {
        "truncated_share": None,
        "n_finished": None,
        "accuracy_finished": None,
        "mean_tokens": float(tokens.mean()) if tokens.len() and tokens.null_count() < tokens.len() else None,
        "median_tokens": float(tokens.median())
        if tokens.len() and tokens.null_count() < tokens.len()
        else None,
    }
    if not has_finish_reason(rows):
        return out
    known = rows.filter(pl.col(FINISH).is_not_null())
    finished = known.filter(pl.col(FINISH) != "length")
    k_ok = int(finished[ok].fill_null(False).sum())
    out["truncated_share"] = (known.height - finished.height) / known.height
    out["n_finished"] = finished.height
    out["accuracy_finished"] = k_ok / finished.height if finished.height else None
    return out


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
    ``n_boot`` replicates and ``seed``; see ``rate_row``) and the ``TRUNCATION_SCHEMA`` columns
    (``truncated_share``, ``n_finished``, ``accuracy_finished``, ``mean_tokens``, ``median_tokens``; the
    first three null when ``view`` has no ``finish_reason``, see ``truncation_row``).

    ``view`` has ``example_id`` and the original column names (``has_backtracking_strict``,
    ``is_correct``) filled from whichever detection/grading mode the caller chose. Groups follow
    ``order`` (config order)."""
    values = list(order) if order is not None else sorted(set(view[by].to_list()))
    rows = []
    for v in values:
        sel = view.filter(pl.col(by) == v)
        rows.append({by: v, **rate_row(sel, seed=seed, n_boot=n_boot), **truncation_row(sel)})
    return pl.DataFrame(rows, schema={by: pl.String, **RATE_SCHEMA, **TRUNCATION_SCHEMA})


def finished_summary(view: pl.DataFrame, seed: int, n_boot: int = N_BOOT) -> dict | None:
    """Accuracy with vs without backtracking among FINISHED completions of ``view`` (``finish_reason``
    != "length": those not cut at the token cap), or None when ``view`` records no finish reason.
    Keys: ``n``, ``n_finished``, ``n_bt`` / ``n_bt_problems`` (finished with backtracking, their
    problems), ``acc_with_bt``, ``acc_without_bt`` (None when that group is empty), ``lift`` (None when
    undefined) with ``lift_lo/_hi`` (95% bootstrap over problems, ``n_boot`` replicates with ``seed``;
    None with fewer than two finished problems)."""
    if not has_finish_reason(view):
        return None
    done = view.filter(pl.col(FINISH).is_not_null() & (pl.col(FINISH) != "length"))
    bt = done[BT].fill_null(False)
    ok = done[OK].fill_null(False)
    n_bt, n_nb = int(bt.sum()), int((~bt).sum())
    a_bt = int((bt & ok).sum()) / n_bt if n_bt else None
    a_nb = int((~bt & ok).sum()) / n_nb if n_nb else None
    lift = a_bt / a_nb if a_bt is not None and a_nb else None
    lo = hi = None
    if lift is not None and done["example_id"].n_unique() > 1:
        split = accuracy_split_intervals(
            done["example_id"].to_numpy(),
            bt.cast(pl.Boolean).to_numpy(),
            ok.cast(pl.Float64).to_numpy(),
            n_boot,
            seed,
        )
        lo, hi = split["lift"]
    return {
        "n": view.height,
        "n_finished": done.height,
        "n_bt": n_bt,
        "n_bt_problems": done.filter(bt)["example_id"].n_unique(),
        "acc_with_bt": a_bt,
        "acc_without_bt": a_nb,
        "lift": lift,
        "lift_lo": lo,
        "lift_hi": hi,
    }


def bt_accuracy_summary(view: pl.DataFrame, seed: int, n_boot: int = N_BOOT) -> dict:
    """Accuracy with vs without backtracking over ``view`` (baseline rows), for the figures and report.

    Returns ``{"accuracy_by_bt": rows, "lift": lift, "summary": summary}``. ``rows`` are the two
    ``group_rates`` rows (``group`` = "with backtracking" / "without backtracking"; accuracy = correct /
    rows of the group). ``summary`` holds the counts (``n``, ``n_problems``, ``n_bt``, ``n_bt_problems``),
    ``bt_rate`` and ``accuracy`` over all rows, ``acc_with_bt`` / ``acc_without_bt``, ``lift`` =
    acc_with_bt / acc_without_bt (None when undefined) and ``difference`` = acc_with_bt - acc_without_bt,
    each with ``_lo/_hi``: every interval is a percentile 95% bootstrap over problems (``example_id``),
    ``n_boot`` replicates drawn with ``seed``; ``finished``: the same among finished completions
    (``finished_summary``; None when ``view`` has no ``finish_reason``)."""
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
    summary["finished"] = finished_summary(view, seed, n_boot)
    return {"accuracy_by_bt": rows.to_dicts(), "lift": lift, "summary": summary}
