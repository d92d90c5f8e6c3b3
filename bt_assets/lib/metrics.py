"""The original's metric tables (exact recomputation) and the corrected, baseline-only metrics.

Seed-compatible tables (spec 3.1, 3.2, P1.9, P1.10) keep the original's definitions, mixed
denominators included: overall ``accuracy`` = correct / (correct + incorrect) (unknowns excluded), every
per-group ``accuracy`` = correct / total, and ``formatting_summary`` uses correct / (correct + incorrect).
Only the ordering differs: groups follow the configured order (B20) instead of Python set order.
Values are computed from integer counts with Python division, so they are bit-identical to the original.

Corrected metrics use baseline rows only (no ablation rows mixed in, B14), ONE accuracy denominator
(correct / all rows; an answer that cannot be extracted counts as not correct, B15), Wilson 95%
intervals for every rate, and problem-level (cluster) bootstrap intervals for the accuracy difference and
lift between completions with and without backtracking.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from bt_assets.lib.grading import grade
from bt_assets.lib.stats import Evidence, accuracy_difference, accuracy_lift, cluster_bootstrap, wilson

EVENT_COLUMNS: list[str] = [
    "example_id",
    "sample_id",
    "variant",
    "condition",
    "has_backtracking_strict",
    "has_backtracking_relaxed",
    "onset_phrase",
    "onset_char",
    "onset_token_in_completion",
    "onset_token_in_full",
    "onset_token_id",
    "onset_token_text",
    "pred_pos_in_full",
    "predicted_answer",
    "is_correct",
    "prompt_tokens",
    "completion_tokens",
]
EVENT_SCHEMA: dict[str, pl.DataType] = {
    c: (
        pl.Int64
        if c
        in {
            "example_id",
            "sample_id",
            "onset_char",
            "onset_token_in_completion",
            "onset_token_in_full",
            "onset_token_id",
            "pred_pos_in_full",
            "prompt_tokens",
            "completion_tokens",
        }
        else pl.Boolean
        if c in {"has_backtracking_strict", "has_backtracking_relaxed", "is_correct"}
        else pl.String
    )
    for c in EVENT_COLUMNS
}
BT, RELAXED, OK = "has_backtracking_strict", "has_backtracking_relaxed", "is_correct"


# --------------------------------------------------------------------------------------------------
# reading and writing the original's files


def _cast(value: str, column: str, line: int):
    dtype = EVENT_SCHEMA[column]
    if dtype == pl.String:
        return None if (value == "" and column == "predicted_answer") else value
    if value == "":
        return None
    if dtype == pl.Boolean:
        if value.lower() not in ("true", "false"):
            raise ValueError(f"line {line}: column {column!r} expects True/False, got {value!r}")
        return value.lower() == "true"
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"line {line}: column {column!r} expects an integer, got {value!r}") from None


def read_original_events(path: str | Path) -> pl.DataFrame:
    """Read an original ``backtracking_events.csv`` (csv module, every field a string first), check the
    17-column schema and cast like the original reader: "True"/"False" -> bool, "" -> null for
    ``predicted_answer``, ``is_correct`` and numeric columns; text columns keep their exact strings
    (``onset_token_text`` " wait" keeps its space; ``onset_phrase`` "" stays "")."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file, expected the columns {EVENT_COLUMNS}")
        missing = [c for c in EVENT_COLUMNS if c not in header]
        extra = [c for c in header if c not in EVENT_COLUMNS]
        dupes = sorted({c for c in header if header.count(c) > 1})
        if missing or extra or dupes:
            raise ValueError(
                f"{path}: events schema mismatch; missing columns {missing}, unexpected columns "
                f"{extra}, duplicated columns {dupes}"
            )
        columns: dict[str, list] = {c: [] for c in header}
        for line, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ValueError(f"{path}: line {line} has {len(row)} fields, expected {len(header)}")
            for c, v in zip(header, row, strict=True):
                columns[c].append(_cast(v, c, line))
    return pl.DataFrame({c: pl.Series(c, columns[c], EVENT_SCHEMA[c]) for c in EVENT_COLUMNS})


def write_json(obj: object, path: str | Path) -> None:
    """JSON exactly as the original wrote it: indent 2, UTF-8 (ensure_ascii off), no trailing newline."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)


def write_original_csv(df: pl.DataFrame, path: str | Path) -> None:
    """CSV exactly as the original's ``csv.DictWriter`` wrote it: CRLF line ends, minimal quoting, floats
    as Python repr (0.028333333333333332), booleans True/False, nulls as empty fields."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(df.columns)
        writer.writerows(["" if v is None else v for v in row] for row in df.iter_rows())


# --------------------------------------------------------------------------------------------------
# seed-compatible tables


def _ordered(present: Sequence[str], config: Sequence[str] | None) -> list[str]:
    """Configured values that occur, in config order, then unconfigured ones (sorted)."""
    seen = set(present)
    head = [v for v in (config or []) if v in seen]
    return head + sorted(seen - set(head))


def _n(df: pl.DataFrame, col: str, value: bool = True) -> int:
    """Rows whose ``col`` is exactly ``value`` (nulls never count)."""
    return int(df[col].eq(value).fill_null(False).sum()) if df.height else 0


def _group(df: pl.DataFrame, count_key: str) -> dict:
    total, bt, correct = df.height, _n(df, BT), _n(df, OK)
    return {
        "total": total,
        count_key: bt,
        "backtracking_rate": bt / total if total else 0,
        "correct": correct,
        "accuracy": correct / total if total else 0,
    }


def _top_level(df: pl.DataFrame) -> dict:
    total = df.height
    bt, relaxed = _n(df, BT), _n(df, RELAXED)
    correct, incorrect = _n(df, OK), _n(df, OK, False)
    bt_rows = df.filter(pl.col(BT).fill_null(False))
    non_bt = df.filter(~pl.col(BT).fill_null(False))
    return {
        "total_samples": total,
        "backtracking_strict_count": bt,
        "backtracking_strict_rate": bt / total,
        "backtracking_relaxed_count": relaxed,
        "backtracking_relaxed_rate": relaxed / total,
        "correct_count": correct,
        "incorrect_count": incorrect,
        "unknown_count": total - correct - incorrect,
        "accuracy": correct / (correct + incorrect) if (correct or incorrect) else None,
        "accuracy_with_backtracking": _n(bt_rows, OK) / bt_rows.height if bt_rows.height else None,
        "accuracy_without_backtracking": _n(non_bt, OK) / non_bt.height if non_bt.height else None,
    }


def _by(df: pl.DataFrame, col: str, order: Sequence[str] | None, count_key: str) -> dict:
    return {
        v: _group(df.filter(pl.col(col) == v), count_key) for v in _ordered(df[col].unique().to_list(), order)
    }


def summary(
    df: pl.DataFrame, variants: Sequence[str] | None = None, conditions: Sequence[str] | None = None
) -> dict:
    """summary_metrics.json (spec 3.1) over the rows of ``df``; {"error": "no events"} when empty,
    like the original. Groups in config order (unconfigured values after, sorted)."""
    if df.height == 0:
        return {"error": "no events"}
    return {
        **_top_level(df),
        "by_variant": _by(df, "variant", variants, "backtracking_strict"),
        "by_condition": _by(df, "condition", conditions, "backtracking_strict"),
    }


def summary_metrics(df: pl.DataFrame, variants: list[str], conditions: list[str]) -> dict:
    """P1.3 summary_metrics.json over ALL rows (every condition, as the original did, B14)."""
    return summary(df, variants, conditions)


CONDITION_SCHEMA = {
    "variant": pl.String,
    "condition": pl.String,
    "total": pl.Int64,
    "backtracking_count": pl.Int64,
    "backtracking_rate": pl.Float64,
    "accuracy": pl.Float64,
}
FORMATTING_SCHEMA = {
    "variant": pl.String,
    "total": pl.Int64,
    "backtracking_count": pl.Int64,
    "backtracking_rate": pl.Float64,
    "accuracy": pl.Float64,
}


def condition_comparison(df: pl.DataFrame, variant: str, conditions: list[str]) -> pl.DataFrame:
    """P1.9 condition_comparison.csv: one row per condition of ``variant`` (accuracy = correct / total)."""
    rows = df.filter(pl.col("variant") == variant)
    by = summary(rows, None, conditions).get("by_condition", {})
    return pl.DataFrame(
        [
            {
                "variant": variant,
                "condition": c,
                "total": s["total"],
                "backtracking_count": s["backtracking_strict"],
                "backtracking_rate": s["backtracking_rate"],
                "accuracy": s["accuracy"],
            }
            for c, s in by.items()
        ],
        schema=CONDITION_SCHEMA,
    )


def formatting_summary(df: pl.DataFrame, variants: list[str]) -> pl.DataFrame:
    """P1.10 formatting_summary.csv: baseline rows per configured variant (variants without rows are
    skipped); accuracy = correct / (correct + incorrect), unknowns excluded (the original's B15)."""
    out = []
    for v in variants:
        rows = df.filter((pl.col("variant") == v) & (pl.col("condition") == "baseline"))
        if rows.height:
            s = _top_level(rows)
            out.append(
                {
                    "variant": v,
                    "total": s["total_samples"],
                    "backtracking_count": s["backtracking_strict_count"],
                    "backtracking_rate": s["backtracking_strict_rate"],
                    "accuracy": s["accuracy"],
                }
            )
    return pl.DataFrame(out, schema=FORMATTING_SCHEMA)


def metrics_v2(df: pl.DataFrame, variants: list[str], conditions: list[str], variant: str) -> dict:
    """P2.1 metrics_v2.json (spec 3.2) with the original's schema and error entries."""
    base = df.filter(pl.col("condition") == "baseline")
    if base.height:
        baseline_only = {"condition": "baseline_only", **_top_level(base)}
        bt_rows = base.filter(pl.col(BT).fill_null(False))
        non_bt = base.filter(~pl.col(BT).fill_null(False))
        acc_bt = _n(bt_rows, OK) / bt_rows.height if bt_rows.height else None
        acc_nb = _n(non_bt, OK) / non_bt.height if non_bt.height else None
        both = acc_bt is not None and acc_nb is not None
        bt_vs_acc = {
            "baseline_only": True,
            "with_backtracking": {"count": bt_rows.height, "correct": _n(bt_rows, OK), "accuracy": acc_bt},
            "without_backtracking": {"count": non_bt.height, "correct": _n(non_bt, OK), "accuracy": acc_nb},
            "accuracy_lift_ratio": acc_bt / acc_nb if both and acc_nb > 0 else None,
            "accuracy_difference": acc_bt - acc_nb if both else None,
        }
        formatting = {
            "baseline_only": True,
            "by_variant": _by(base, "variant", variants, "backtracking_count"),
        }
    else:
        baseline_only = {"error": "no baseline events found"}
        bt_vs_acc = {"error": "no baseline events"}
        formatting = {"error": "no baseline events"}
    rows = df.filter(pl.col("variant") == variant)
    specific = (
        {
            "variant": variant,
            "total": rows.height,
            "by_condition": _by(rows, "condition", conditions, "backtracking_count"),
        }
        if rows.height
        else {"error": f"no events for variant {variant}"}
    )
    return {
        "baseline_only_summary": baseline_only,
        "backtracking_vs_accuracy": bt_vs_acc,
        "formatting_effect": formatting,
        "variant_specific": specific,
    }


# --------------------------------------------------------------------------------------------------
# corrected metrics


def _num(x: float | None) -> float | None:
    """JSON-safe number: nan/inf -> None."""
    return None if x is None or not np.isfinite(x) else float(x)


def _interval(lo_hi: tuple[float, float]) -> list[float | None]:
    return [_num(lo_hi[0]), _num(lo_hi[1])]


def _rate(k: int, n: int) -> dict:
    return {"count": k, "n": n, "rate": _num(k / n) if n else None, "ci95": _interval(wilson(k, n))}


def _corrected_block(rows: pl.DataFrame, seed: int, n_boot: int) -> dict:
    n = rows.height
    bt = rows[BT].fill_null(False).to_numpy().astype(bool) if n else np.zeros(0, bool)
    ok = rows[OK].fill_null(False).to_numpy().astype(float) if n else np.zeros(0)
    problems = rows["example_id"].to_numpy() if n else np.zeros(0, np.int64)
    k_bt, k_ok = int(bt.sum()), int(ok.sum())
    ok_bt, ok_nb = int(ok[bt].sum()), int(ok[~bt].sum())
    diff, lift = accuracy_difference(bt, ok), accuracy_lift(bt, ok)
    return {
        "n": n,
        "n_problems": int(np.unique(problems).size),
        "n_bt_problems": int(np.unique(problems[bt]).size),
        "backtracking": _rate(k_bt, n),
        "backtracking_relaxed": _rate(_n(rows, RELAXED), n),
        "accuracy": _rate(k_ok, n),
        "unknown": n - k_ok - _n(rows, OK, False),
        "accuracy_with_backtracking": _rate(ok_bt, k_bt),
        "accuracy_without_backtracking": _rate(ok_nb, n - k_bt),
        "accuracy_difference": {
            "estimate": _num(diff),
            "ci95": _interval(cluster_bootstrap(problems, [bt, ok], accuracy_difference, n_boot, seed)),
        },
        "accuracy_lift": {
            "estimate": _num(lift),
            "ci95": _interval(cluster_bootstrap(problems, [bt, ok], accuracy_lift, n_boot, seed)),
        },
    }


def corrected_metrics(
    df: pl.DataFrame,
    variants: list[str],
    conditions: list[str],
    regraded: bool,
    seed: int,
    original: pl.DataFrame | None = None,
    n_boot: int = 2000,
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
        for v in _ordered(base["variant"].unique().to_list(), variants)
    }
    present = _ordered(df["condition"].unique().to_list(), conditions)
    common = set(df["variant"].unique().to_list())
    for c in present:
        common &= set(df.filter(pl.col("condition") == c)["variant"].unique().to_list())
    common_variants = _ordered(list(common), variants)
    cells = df.filter(pl.col("variant").is_in(common_variants))
    by_condition = {
        c: _corrected_block(cells.filter(pl.col("condition") == c), seed, n_boot) for c in present
    }

    orig = (original if original is not None else df).filter(pl.col("condition") == "baseline")
    orig_bt = orig.filter(pl.col(BT).fill_null(False))
    orig_nb = orig.filter(~pl.col(BT).fill_null(False))
    o_bt = _n(orig_bt, OK) / orig_bt.height if orig_bt.height else None
    o_nb = _n(orig_nb, OK) / orig_nb.height if orig_nb.height else None
    lift_ci = overall["accuracy_lift"]["ci95"]
    evidence = evidence or Evidence()
    k_bt, bt_problems = overall["backtracking"]["count"], overall["n_bt_problems"]
    return {
        "scope": "baseline condition only (by_condition: every condition on by_condition_variants)",
        "accuracy_denominator": "all rows: accuracy = correct / n; an unanswered or ungradable completion "
        "(is_correct null) counts as not correct",
        "interval_methods": {
            "rates": "Wilson score 95%",
            "difference_and_lift": f"percentile 95%, bootstrap over problems (example_id), "
            f"{n_boot} replicates, seed {seed}",
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
