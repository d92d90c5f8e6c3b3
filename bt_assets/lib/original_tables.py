"""The original's event file and metric tables, recomputed exactly (the seed-compatible contract).

Everything here keeps the original's file formats and column names (``storage/original_format/``), and
its definitions, mixed denominators included (spec 3.1, 3.2, P1.9, P1.10):

* overall ``accuracy`` = correct / (correct + incorrect): rows whose ``is_correct`` is null (unknown)
  are excluded from the denominator (the original's B15);
* every per-group ``accuracy`` (by variant, by condition) = correct / total, unknowns counted as not
  correct;
* ``backtracking_*_rate`` = rows with the flag / all rows of the group;
* ``accuracy_with_backtracking`` / ``accuracy_without_backtracking`` = correct / rows with (without)
  ``has_backtracking_strict``; ``summary_metrics`` counts every condition's rows (ablation rows mixed in,
  B14), ``metrics_v2`` and ``formatting_summary`` the baseline condition only.

No intervals are computed here (the original had none). Only the ordering differs from the original:
groups follow the configured order (B20) instead of Python set order. Values are computed from integer
counts with Python division, so they are bit-identical to the original; the exact-import tests compare
them value for value with the original run's files.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import polars as pl

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
_INT_COLUMNS = {
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
_BOOL_COLUMNS = {"has_backtracking_strict", "has_backtracking_relaxed", "is_correct"}
EVENT_SCHEMA: dict[str, pl.DataType] = {
    c: pl.Int64 if c in _INT_COLUMNS else pl.Boolean if c in _BOOL_COLUMNS else pl.String
    for c in EVENT_COLUMNS
}
BT, RELAXED, OK = "has_backtracking_strict", "has_backtracking_relaxed", "is_correct"


# --------------------------------------------------------------------------------------------------
# reading and writing the original's files


def _cast(value: str, column: str, line: int) -> str | int | bool | None:
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
# counting helpers (shared with the corrected metrics in ``bt_assets.lib.metrics``)


def ordered(present: Sequence[str], config: Sequence[str] | None) -> list[str]:
    """Configured values that occur, in config order, then unconfigured ones (sorted)."""
    seen = set(present)
    head = [v for v in (config or []) if v in seen]
    return head + sorted(seen - set(head))


def n_rows(df: pl.DataFrame, col: str, value: bool = True) -> int:
    """Rows whose ``col`` is exactly ``value`` (nulls never count)."""
    return int(df[col].eq(value).fill_null(False).sum()) if df.height else 0


def split_by_bt(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, float | None, float | None]:
    """Rows with and without ``has_backtracking_strict`` (null = without) and the accuracy of each:
    correct / rows of the side (unknowns count as not correct), None for a side without rows."""
    with_bt = df.filter(pl.col(BT).fill_null(False))
    without = df.filter(~pl.col(BT).fill_null(False))
    acc_bt = n_rows(with_bt, OK) / with_bt.height if with_bt.height else None
    acc_nb = n_rows(without, OK) / without.height if without.height else None
    return with_bt, without, acc_bt, acc_nb


def _group(df: pl.DataFrame, count_key: str) -> dict:
    """One group's block: BT rate = BT rows / total, accuracy = correct / total."""
    total, bt, correct = df.height, n_rows(df, BT), n_rows(df, OK)
    return {
        "total": total,
        count_key: bt,
        "backtracking_rate": bt / total if total else 0,
        "correct": correct,
        "accuracy": correct / total if total else 0,
    }


def _top_level(df: pl.DataFrame) -> dict:
    """The headline block: accuracy = correct / (correct + incorrect), unknowns excluded (B15)."""
    total = df.height
    bt, relaxed = n_rows(df, BT), n_rows(df, RELAXED)
    correct, incorrect = n_rows(df, OK), n_rows(df, OK, False)
    _, _, acc_bt, acc_nb = split_by_bt(df)
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
        "accuracy_with_backtracking": acc_bt,
        "accuracy_without_backtracking": acc_nb,
    }


def _by(df: pl.DataFrame, col: str, order: Sequence[str] | None, count_key: str) -> dict:
    return {
        v: _group(df.filter(pl.col(col) == v), count_key) for v in ordered(df[col].unique().to_list(), order)
    }


# --------------------------------------------------------------------------------------------------
# seed-compatible tables


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
FORMATTING_SCHEMA = {k: v for k, v in CONDITION_SCHEMA.items() if k != "condition"}


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
    """P2.1 metrics_v2.json (spec 3.2) with the original's schema and error entries: the headline and
    the BT/accuracy comparison over baseline rows only; lift = acc_with / acc_without (None when either
    is undefined or acc_without is 0), difference = acc_with - acc_without."""
    base = df.filter(pl.col("condition") == "baseline")
    if base.height:
        baseline_only = {"condition": "baseline_only", **_top_level(base)}
        bt_rows, non_bt, acc_bt, acc_nb = split_by_bt(base)
        both = acc_bt is not None and acc_nb is not None
        bt_vs_acc = {
            "baseline_only": True,
            "with_backtracking": {
                "count": bt_rows.height,
                "correct": n_rows(bt_rows, OK),
                "accuracy": acc_bt,
            },
            "without_backtracking": {
                "count": non_bt.height,
                "correct": n_rows(non_bt, OK),
                "accuracy": acc_nb,
            },
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


def original_files(
    events: pl.DataFrame, variants: list[str], conditions: list[str], variant: str
) -> dict[str, pl.DataFrame | dict]:
    """The original's four output files, by file name, recomputed from the 17 event columns exactly as
    it computed them (``variant`` is the Phase-2 variant of ``metrics_v2.json``)."""
    return {
        "summary_metrics.json": summary_metrics(events, variants, conditions),
        "condition_comparison.csv": condition_comparison(events, variant, conditions),
        "formatting_summary.csv": formatting_summary(events, variants),
        "metrics_v2.json": metrics_v2(events, variants, conditions, variant),
    }


def write_files(files: dict[str, pl.DataFrame | dict], directory: Path) -> dict[str, Path]:
    """Write ``original_files`` under ``directory`` in the original's formats; returns name -> path."""
    out = {}
    for name, obj in files.items():
        out[name] = Path(directory) / name
        if isinstance(obj, pl.DataFrame):
            write_original_csv(obj, out[name])
        else:
            write_json(obj, out[name])
    return out
