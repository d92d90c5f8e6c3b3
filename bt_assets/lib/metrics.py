"""Corrected metrics: baseline rows only, one accuracy denominator, an interval for every number.

The original's tables (exact recomputation, mixed denominators) live in ``bt_assets.lib.original_tables``;
this module corrects them (spec 5.1, B14, B15):

* rows: the ``baseline`` condition only (no ablation rows mixed in, B14); ``by_condition`` compares
  conditions on the variants that ran every present condition;
* ONE accuracy denominator: ``accuracy`` = correct / n (all rows); an answer that cannot be extracted or
  graded (``is_correct`` null) counts as not correct (B15); the same for accuracy with (without)
  backtracking: correct / rows with (without) ``has_backtracking_strict``;
* intervals: a percentile 95% bootstrap over PROBLEMS (``example_id`` clusters; samples of one problem
  are correlated) for every rate (``ci95: [lo, hi]`` beside ``rate``; a rate of the rows with / without
  backtracking resamples the problems of those rows) and for the accuracy difference (with - without)
  and lift (with / without), ``ci95`` beside ``estimate``; ``n_boot`` replicates drawn with the
  pipeline's seed (same seed, same intervals). A block from a single problem, or a rate of 0 or 1,
  has a zero-width interval (every replicate gives the estimate), from which no claim is made;
* a direction of the lift is only claimed with enough BT events from enough problems (``stats.Evidence``).

``regrade_predictions`` re-grades the stored prediction strings of imported events with the corrected
grader (no completions needed).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from bt_assets.lib.conditions import with_pooled_random
from bt_assets.lib.grading import grade
from bt_assets.lib.original_tables import BT, EVENT_COLUMNS, OK, RELAXED, n_rows, ordered, split_by_bt
from bt_assets.lib.rates import bt_accuracy_summary
from bt_assets.lib.stats import (
    BOOTSTRAP_METHOD,
    N_BOOT,
    Evidence,
    accuracy_difference,
    accuracy_lift,
    accuracy_split_intervals,
    bootstrap_note,
    cluster_ratio_interval,
)


def _num(x: float | None) -> float | None:
    """JSON-safe number: nan/inf -> None."""
    return None if x is None or not np.isfinite(x) else float(x)


def _interval(lo_hi: tuple[float, float]) -> list[float | None]:
    return [_num(lo_hi[0]), _num(lo_hi[1])]


def _rate(problems: np.ndarray, hits: np.ndarray, n_boot: int, seed: int) -> dict:
    """``hits`` (0/1 per row) of the rows of ``problems``: the count, n, the rate (None when n = 0) and
    its percentile 95% interval bootstrapping problems (``stats.cluster_ratio_interval``)."""
    k, n = int(hits.sum()), int(hits.size)
    ci = cluster_ratio_interval(problems, hits, None, n_boot, seed)
    return {"count": k, "n": n, "rate": _num(k / n) if n else None, "ci95": _interval(ci)}


def _corrected_block(rows: pl.DataFrame, seed: int, n_boot: int) -> dict:
    """One block of rows: counts, rates (denominator n, or the rows with / without BT for the split
    accuracies; null ``is_correct`` = not correct), and the accuracy difference (with - without) and
    lift (with / without), every interval a percentile bootstrap over problems."""
    n = rows.height
    bt = rows[BT].fill_null(False).to_numpy().astype(bool) if n else np.zeros(0, bool)
    ok = rows[OK].fill_null(False).to_numpy().astype(float) if n else np.zeros(0)
    relaxed = rows[RELAXED].fill_null(False).to_numpy().astype(float) if n else np.zeros(0)
    problems = rows["example_id"].to_numpy() if n else np.zeros(0, np.int64)
    k_ok = int(ok.sum())
    split = accuracy_split_intervals(problems, bt, ok, n_boot, seed)
    return {
        "n": n,
        "n_problems": int(np.unique(problems).size),
        "n_bt_problems": int(np.unique(problems[bt]).size),
        "backtracking": _rate(problems, bt.astype(float), n_boot, seed),
        "backtracking_relaxed": _rate(problems, relaxed, n_boot, seed),
        "accuracy": _rate(problems, ok, n_boot, seed),
        "unknown": n - k_ok - n_rows(rows, OK, False),
        "accuracy_with_backtracking": _rate(problems[bt], ok[bt], n_boot, seed),
        "accuracy_without_backtracking": _rate(problems[~bt], ok[~bt], n_boot, seed),
        "accuracy_difference": {
            "estimate": _num(accuracy_difference(bt, ok)),
            "ci95": _interval(split["difference"]),
        },
        "accuracy_lift": {"estimate": _num(accuracy_lift(bt, ok)), "ci95": _interval(split["lift"])},
    }


def corrected_metrics(
    df: pl.DataFrame,
    variants: list[str],
    conditions: list[str],
    regraded: bool,
    seed: int,
    original: pl.DataFrame | None = None,
    n_boot: int = N_BOOT,
    evidence: Evidence | None = None,
) -> dict:
    """Baseline-only metrics with one accuracy denominator and intervals, beside the original headline.

    ``df`` has the 17 event columns filled from the chosen detection/grading modes; ``regraded`` says
    that ``is_correct`` comes from re-grading stored prediction strings (no completions). ``original``
    holds the same rows with the original (seed-compatible) columns for the original headline; when
    omitted, ``df`` itself is used. ``by_condition`` compares conditions on the variants that ran every
    present condition (so ablation cells are not compared with other variants' baselines)."""
    base = df.filter(pl.col("condition") == "baseline")
    overall = _corrected_block(base, seed, n_boot)
    by_variant = {
        v: _corrected_block(base.filter(pl.col("variant") == v), seed, n_boot)
        for v in ordered(base["variant"].unique().to_list(), variants)
    }
    present = ordered(df["condition"].unique().to_list(), conditions)
    common = set(df["variant"].unique().to_list())
    for c in present:
        common &= set(df.filter(pl.col("condition") == c)["variant"].unique().to_list())
    common_variants = ordered(list(common), variants)
    cells = df.filter(pl.col("variant").is_in(common_variants))
    by_condition = {
        c: _corrected_block(cells.filter(pl.col("condition") == c), seed, n_boot) for c in present
    }

    orig = (original if original is not None else df).filter(pl.col("condition") == "baseline")
    _, _, o_bt, o_nb = split_by_bt(orig)
    lift_ci = overall["accuracy_lift"]["ci95"]
    evidence = evidence or Evidence()
    k_bt, bt_problems = overall["backtracking"]["count"], overall["n_bt_problems"]
    return {
        "scope": "baseline condition only (by_condition: every condition on by_condition_variants)",
        "accuracy_denominator": "all rows: accuracy = correct / n; an unanswered or ungradable completion "
        "(is_correct null) counts as not correct",
        "interval_methods": {
            "rates": f"95% {BOOTSTRAP_METHOD}, {n_boot} replicates, seed {seed}",
            "difference_and_lift": f"95% {BOOTSTRAP_METHOD}, {n_boot} replicates, seed {seed}",
            "note": bootstrap_note(n_boot, seed),
        },
        "regraded": regraded,
        "grading_source": (
            "stored predicted_answer strings re-graded with the corrected grader"
            if regraded
            else "is_correct as given"
        ),
        "overall": overall,
        "by_variant": by_variant,
        "by_condition_variants": common_variants,
        "by_condition": by_condition,
        "headline": {
            "original_lift": o_bt / o_nb if o_bt is not None and o_nb else None,
            "original_accuracy_with_backtracking": o_bt,
            "original_accuracy_without_backtracking": o_nb,
            "corrected_lift": overall["accuracy_lift"]["estimate"],
            "corrected_lift_ci95": lift_ci,
            "corrected_accuracy_with_backtracking": overall["accuracy_with_backtracking"]["rate"],
            "corrected_accuracy_without_backtracking": overall["accuracy_without_backtracking"]["rate"],
            "corrected_difference": overall["accuracy_difference"]["estimate"],
            "corrected_difference_ci95": overall["accuracy_difference"]["ci95"],
            # None when the interval is missing or there is too little BT data to read it (stats.Evidence)
            "lift_interval_excludes_1": (
                None
                if None in lift_ci or not evidence.enough(k_bt, bt_problems)
                else evidence.excludes(lift_ci[0], lift_ci[1], 1.0, k_bt, bt_problems)
            ),
            "evidence": {
                "bt_events": k_bt,
                "bt_problems": bt_problems,
                "min_events": evidence.min_events,
                "min_problems": evidence.min_problems,
            },
        },
    }


def regrade_predictions(df: pl.DataFrame, golds: Mapping[int, str] | Mapping[str, str]) -> pl.DataFrame:
    """Re-grade the stored ``predicted_answer`` strings with the corrected grader (for imported events
    without completions the stored string is the text graded). Null predictions stay null/unknown."""
    preds, ids = df["predicted_answer"].to_list(), df["example_id"].to_list()
    out_pred, out_ok = [], []
    for p, eid in zip(preds, ids, strict=True):
        gold = golds.get(eid, golds.get(str(eid)))  # type: ignore[call-overload]
        g = grade(p, gold, "corrected") if p is not None else None
        out_pred.append(g.prediction if g else None)
        out_ok.append(g.correct if g else None)
    return df.with_columns(
        pl.Series("predicted_answer", out_pred, pl.String), pl.Series("is_correct", out_ok, pl.Boolean)
    )


def metrics_corrected(
    events: pl.DataFrame,
    view: pl.DataFrame,
    variants: list[str],
    conditions: list[str],
    regraded: bool,
    seed: int,
    evidence: Evidence,
    modes: Mapping[str, str],
) -> dict:
    """The ``metrics_corrected`` asset: ``corrected_metrics`` of ``view`` (the events in the chosen
    modes) beside the original headline of ``events``' seed-compatible columns, plus ``figure_rows``
    (baseline accuracy with/without BT and the lift, flattened to ``<name>_lo/_hi`` for figures and
    reports) and the ``modes`` the numbers were computed in. ``by_condition`` has each random seed's
    condition and, with two seeds or more, their pooled rows (``random_ablation_pooled``)."""
    original = events.select(EVENT_COLUMNS)
    pooled, conditions = with_pooled_random(view, conditions)
    out = corrected_metrics(pooled, variants, conditions, regraded, seed, original, evidence=evidence)
    out["figure_rows"] = bt_accuracy_summary(view.filter(pl.col("condition") == "baseline"), seed)
    out["modes"] = dict(modes)
    return out
