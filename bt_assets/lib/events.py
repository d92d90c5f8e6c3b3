"""Backtracking events: detection + grading of every completion, one row per completion.

The original's 17 columns are always computed in ``seed_compatible`` mode (so the original tables can
be recomputed from the platform's own generations); the same quantities in ``corrected`` mode (B1-B4,
B16 fixed) sit beside them with the suffix ``_corrected``. Which set the downstream analysis uses is the
profile's ``detection.mode`` / ``grading.mode``, recorded with every output. Token positions index
the sequence the model saw (prompt ids, then completion ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from bt_assets.lib.detect import detect, onset_fields
from bt_assets.lib.grading import grade
from bt_assets.lib.original_tables import EVENT_COLUMNS, EVENT_SCHEMA

ONSET_FIELDS = [
    "onset_token_in_completion",
    "onset_token_in_full",
    "onset_token_id",
    "onset_token_text",
    "pred_pos_in_full",
]
CORRECTED_COLUMNS = [
    "has_backtracking_strict_corrected",
    "has_backtracking_relaxed_corrected",
    "onset_phrase_corrected",
    "onset_char_corrected",
    *[f"{c}_corrected" for c in ONSET_FIELDS],
    "predicted_answer_corrected",
    "is_correct_corrected",
]
EXTRA_COLUMNS = ["finish_reason", "prompt_hash", "cell", "completion"]
SCHEMA = {
    **EVENT_SCHEMA,
    **{c: EVENT_SCHEMA[c.removesuffix("_corrected")] for c in CORRECTED_COLUMNS},
    **{c: pl.String for c in EXTRA_COLUMNS},
}


def bt_column(mode: str) -> str:
    return "has_backtracking_strict" if mode == "seed_compatible" else "has_backtracking_strict_corrected"


def correct_column(mode: str) -> str:
    return "is_correct" if mode == "seed_compatible" else "is_correct_corrected"


def onset_column(name: str, mode: str) -> str:
    """Column holding an onset field (e.g. ``pred_pos_in_full``) for a detection mode."""
    return name if mode == "seed_compatible" else f"{name}_corrected"


@dataclass(frozen=True)
class Detector:
    """What counts as a backtracking onset and as an answer: the profile's ``detection`` section, and
    whether the tokenizer prepends BOS (token positions index the sequence the model saw)."""

    strict: tuple[str, ...]
    relaxed: tuple[str, ...]
    add_bos: bool
    answer_regex: str | None = None


def golds_of(problems: pl.DataFrame) -> dict[int, str]:
    """example_id -> gold answer string of a problem table."""
    return dict(zip(problems["id"].to_list(), problems["answer_value"].to_list(), strict=True))


def detect_and_grade(
    gens: pl.DataFrame,
    prompts: pl.DataFrame,
    problems: pl.DataFrame,
    tokenizer,
    detector: Detector,
    keep_token_ids: bool = False,
) -> pl.DataFrame:
    """Detect and grade every completion in both modes, each against ITS OWN problem's gold (B6).

    One row per completion of ``gens`` (the generation store's rows); ``prompts`` gives the prompt text
    per (variant, example_id) for token positions; ``keep_token_ids`` adds the sampled
    ``completion_token_ids`` (the sweep's scale-1.0 check compares them)."""
    golds = golds_of(problems)
    prompt_text = {(r["variant"], r["example_id"]): r["prompt"] for r in prompts.iter_rows(named=True)}
    rows = []
    for g in gens.iter_rows(named=True):
        prompt = prompt_text[(g["variant"], g["example_id"])]
        text, gold = g["completion"], golds.get(g["example_id"])
        row = {k: g[k] for k in ("example_id", "sample_id", "variant", "condition")}
        for mode, suffix in (("seed_compatible", ""), ("corrected", "_corrected")):
            onset = detect(text, detector.strict, detector.relaxed, mode)
            fields = onset_fields(tokenizer, prompt, text, onset, detector.add_bos)
            graded = grade(text, gold, mode, detector.answer_regex)
            row |= {
                f"has_backtracking_strict{suffix}": onset.has_strict,
                f"has_backtracking_relaxed{suffix}": onset.has_relaxed,
                f"onset_phrase{suffix}": onset.phrase,
                f"onset_char{suffix}": onset.char,
                **{f"{k}{suffix}": fields[k] for k in ONSET_FIELDS},
                f"predicted_answer{suffix}": graded.prediction,
                f"is_correct{suffix}": graded.correct,
            }
        row |= {
            "prompt_tokens": g["prompt_tokens"],
            "completion_tokens": g["completion_tokens"],
            "finish_reason": g["finish_reason"],
            "prompt_hash": g["prompt_hash"],
            "cell": g["cell"],
            "completion": text,
        }
        rows.append(row)
    events = pl.DataFrame(rows, schema=SCHEMA)
    return events.with_columns(gens["completion_token_ids"]) if keep_token_ids else events


DETECTION_FIELDS = [
    "has_backtracking_strict",
    "has_backtracking_relaxed",
    "onset_phrase",
    "onset_char",
    *ONSET_FIELDS,
]
GRADING_FIELDS = ["predicted_answer", "is_correct"]


def analysis_view(
    events: pl.DataFrame, detection_mode: str, grading_mode: str, keep: Sequence[str] = ()
) -> pl.DataFrame:
    """The original's 17 event columns filled from the chosen modes (the ``_corrected`` columns renamed
    into place), so every analysis reads one spelling whatever the modes, plus the columns ``keep``
    as they are. Imported events have no corrected detection (null): they keep the original's."""
    cols = {c: c for c in EVENT_COLUMNS}
    if detection_mode == "corrected" and events["has_backtracking_strict_corrected"].null_count() == 0:
        cols |= {c: f"{c}_corrected" for c in DETECTION_FIELDS}
    if grading_mode == "corrected":
        cols |= {c: f"{c}_corrected" for c in GRADING_FIELDS}
    extra = [pl.col(c) for c in keep if c not in cols]
    return events.select([pl.col(src).alias(dst) for dst, src in cols.items()] + extra)


def baseline_view(
    events: pl.DataFrame,
    detection_mode: str,
    grading_mode: str,
    variant: str | None = None,
    keep: Sequence[str] = (),
) -> pl.DataFrame:
    """``analysis_view`` of the baseline condition only (of one variant, or all when ``variant`` is
    None): the population every baseline rate, lift and figure is computed on."""
    view = analysis_view(events, detection_mode, grading_mode, keep)
    view = view.filter(pl.col("condition") == "baseline")
    return view if variant is None else view.filter(pl.col("variant") == variant)


def imported_events(original: pl.DataFrame, golds: dict[int, str]) -> pl.DataFrame:
    """An original events CSV: no completions, so corrected detection is unknown (null) and the
    corrected grade re-grades the stored predicted string (the ``regraded`` view)."""
    preds = original["predicted_answer"].to_list()
    regraded = [
        grade(p, golds.get(e), "corrected") if p is not None else None
        for p, e in zip(preds, original["example_id"].to_list(), strict=True)
    ]
    return original.with_columns(
        *[pl.lit(None, SCHEMA[c]).alias(c) for c in CORRECTED_COLUMNS[:-2]],
        pl.Series("predicted_answer_corrected", [g.prediction if g else None for g in regraded], pl.String),
        pl.Series("is_correct_corrected", [g.correct if g else None for g in regraded], pl.Boolean),
        pl.lit(None, pl.String).alias("finish_reason"),
        pl.lit(None, pl.String).alias("prompt_hash"),
        pl.concat_str(pl.lit("variant="), "variant", pl.lit(",condition="), "condition").alias("cell"),
        pl.lit(None, pl.String).alias("completion"),
    )
