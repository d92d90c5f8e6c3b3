"""Phase-2 tables: per-cell rates with intervals and the paired change vs the baseline cell.

All cells of a sweep share random numbers per (problem, sample) (counter-based sampling), so a cell and
the baseline form pairs; the change is the mean paired difference. Every interval (cell rates and
paired changes) is a 95% percentile bootstrap that resamples PROBLEMS (samples of one problem are
correlated; ``stats.N_BOOT`` replicates with the pipeline's seed, ``stats.bootstrap_note``); the means
over events of ``continuation_summary`` carry problem-clustered t-intervals
(``stats.clustered_mean_interval``). Accuracy = correct / all completions (an unanswered completion
counts as not correct); that one denominator is used everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from bt_assets.lib.events import bt_column, correct_column
from bt_assets.lib.onset_phrases import phrase_summary, phrase_table
from bt_assets.lib.rates import rate_row, truncation_row
from bt_assets.lib.stats import (
    N_BOOT,
    Evidence,
    bootstrap_note,
    cluster_ratio_interval,
    clustered_mean_interval,
    problem_of,
)
from bt_assets.lib.sweeps import SweepCell

if TYPE_CHECKING:
    from bt_assets.lib.generation import Cell


def paired_change(
    problem: np.ndarray, diff: np.ndarray, seed: int, n_boot: int = N_BOOT
) -> tuple[float, float, float]:
    """Mean per-pair difference and its 95% percentile interval, resampling problems (clusters)."""
    if diff.size == 0:
        return float("nan"), float("nan"), float("nan")
    lo, hi = cluster_ratio_interval(problem, diff, None, n_boot, seed)
    return float(diff.mean()), lo, hi


def cell_stats(
    rows: pl.DataFrame, base: pl.DataFrame, bt: str, ok: str, seed: int, n_boot: int = N_BOOT
) -> dict:
    """One sweep cell: the ``rates.RATE_SCHEMA`` columns over its completions (BT rate and accuracy =
    correct / all completions, ``bt_rate_lo/_hi``, ``accuracy_lo/_hi`` from a 95% bootstrap over
    problems, ``rates.rate_row``), the ``rates.TRUNCATION_SCHEMA`` columns (``truncated_share``:
    completions that stopped at the token cap / all, ``n_finished``, ``accuracy_finished`` = correct /
    finished, ``mean_tokens``, ``median_tokens``; null shares without ``finish_reason``,
    ``rates.truncation_row``), and the paired change vs the baseline cell ``base`` (same problem and sample):
    ``delta_bt`` / ``delta_acc`` = mean per-pair difference (cell minus baseline) with ``_lo/_hi`` from
    a 95% bootstrap over problems; ``n_pairs``, and ``bt_pairs`` / ``bt_pair_problems``: pairs where
    either side backtracks, and their problems. Every interval: ``n_boot`` replicates with ``seed``."""
    out: dict = {**rate_row(rows, bt, ok, seed=seed, n_boot=n_boot), **truncation_row(rows, ok)}
    return {**out, **paired_deltas(rows, base, bt, ok, seed, n_boot)}


def paired_deltas(
    a: pl.DataFrame, b: pl.DataFrame, bt: str, ok: str, seed: int, n_boot: int = N_BOOT
) -> dict:
    """``a`` minus ``b`` on the same (problem, sample) pairs: ``delta_bt`` / ``delta_acc`` = mean per-pair
    difference of the 0/1 columns ``bt`` / ``ok`` with ``_lo/_hi`` from a 95% bootstrap over problems;
    ``n_pairs``; and the BT evidence behind the change, ``bt_pairs`` / ``bt_pair_problems``: the pairs
    where either side backtracks, and their problems."""
    keys = ["example_id", "sample_id"]
    pairs = a.select(*keys, bt, ok).join(b.select(*keys, bt, ok), on=keys, suffix="_b")
    prob = pairs["example_id"].to_numpy()
    out: dict = {}
    for name, col in (("bt", bt), ("acc", ok)):
        d = pairs[col].fill_null(False).cast(pl.Int8) - pairs[f"{col}_b"].fill_null(False).cast(pl.Int8)
        mean, lo, hi = paired_change(prob, d.to_numpy().astype(float), seed, n_boot)
        out[f"delta_{name}"], out[f"delta_{name}_lo"], out[f"delta_{name}_hi"] = mean, lo, hi
    out["n_pairs"] = pairs.height
    either = pairs.filter(pl.col(bt).fill_null(False) | pl.col(f"{bt}_b").fill_null(False))
    out["bt_pairs"], out["bt_pair_problems"] = either.height, either["example_id"].n_unique()
    return out


def sweep_tables(
    events: pl.DataFrame,
    cells: Sequence[SweepCell],
    n_components: Mapping[str, int],
    detection_mode: str,
    grading_mode: str,
    min_accuracy_fraction: float,
    seed: int,
    evidence: Evidence = Evidence(),
) -> dict:
    """Subset table, scale table, per-cell stats and the best trade-off (``best_tradeoff``: a shown BT
    reduction, read with ``evidence``, among cells keeping accuracy >= ``min_accuracy_fraction`` x
    baseline accuracy; always a dict, ``cell`` None with a ``reason`` when no cell qualifies).

    Every row is ``cell``, ``subset``, ``scale``, ``n_components`` (components the cell scales, from
    ``n_components``; 0 when absent), ``sweeps`` and the ``cell_stats`` columns; BT and correctness are
    read from the columns of ``detection_mode`` / ``grading_mode``. ``onset_phrases``: the per-cell
    distribution of normalised onset phrases (``onset_phrases.phrase_table`` rows), and each row's
    ``onset_phrases`` its top phrases with counts."""
    bt, ok = bt_column(detection_mode), correct_column(grading_mode)
    base_key = next(c.key for c in cells if c.subset == "baseline")
    base = events.filter(pl.col("condition") == base_key).select("example_id", "sample_id", bt, ok)
    phrases = phrase_table(events, [c.key for c in cells], detection_mode)
    phrase_text = phrase_summary(phrases)
    per_cell = []
    for c in cells:
        st = cell_stats(events.filter(pl.col("condition") == c.key), base, bt, ok, seed)
        per_cell.append(
            {
                "cell": c.key,
                "subset": c.subset,
                "scale": c.scale,
                "n_components": n_components.get(c.key, 0),
                "sweeps": ",".join(c.sweeps),
                **st,
                "onset_phrases": phrase_text.get(c.key, ""),
            }
        )
    base_row = next(r for r in per_cell if r["cell"] == base_key)
    subset = [r for r in per_cell if "subset" in r["sweeps"].split(",")]
    scale = sorted(
        (r for r in per_cell if "scale" in r["sweeps"].split(",") and r["subset"] != "baseline"),
        key=lambda r: r["scale"],
    )
    best = best_tradeoff(per_cell, base_row, min_accuracy_fraction, evidence)
    return {
        "cells": per_cell,
        "subset": subset,
        "scale": scale,
        "best_tradeoff": best,
        "baseline": base_row,
        "onset_phrases": phrases.to_dicts(),
        "detection_mode": detection_mode,
        "grading_mode": grading_mode,
        "accuracy_denominator": "all completions (no answer = not correct)",
        "interval_method": bootstrap_note(N_BOOT, seed),
    }


def best_tradeoff(rows: Sequence[dict], base: dict, min_fraction: float, evidence: Evidence) -> dict:
    """The best trade-off among the ablated cells (scale != 1). A cell qualifies when (1) its paired BT
    change vs the baseline is a REDUCTION shown by its 95% interval: ``delta_bt_hi`` < 0, read only with
    enough evidence (``evidence``: ``bt_pairs`` pairs with a BT event from ``bt_pair_problems``
    problems; never from a zero-width interval), and (2) its accuracy is >= ``min_fraction`` x the
    baseline's (point estimates). The qualifying cell with the largest relative BT reduction
    (base - cell) / base wins (ties: higher accuracy).

    Always a JSON-serialisable dict stating the rule (``min_accuracy_fraction``, ``accuracy_floor``,
    ``min_events``, ``min_problems``) and ``rejected`` (``{"cell", "why"}`` per ablated cell that does
    not qualify), with either the winning row (its columns, ``relative_bt_reduction``, ``reason`` None)
    or ``cell`` None and ``reason``: why no cell qualifies."""
    floor = min_fraction * base["accuracy"] if base["n"] else float("nan")
    out: dict = {
        "cell": None,
        "reason": None,
        "min_accuracy_fraction": min_fraction,
        "accuracy_floor": floor,
        "min_events": evidence.min_events,
        "min_problems": evidence.min_problems,
        "rejected": [],
    }
    if not base["n"]:
        return {**out, "reason": "the baseline cell has no completions"}
    if not base["bt_rate"] > 0:
        return {**out, "reason": "the baseline cell has no BT event, so there is no BT to reduce"}
    ok = []
    for r in rows:
        if r["cell"] == base["cell"] or r["scale"] == 1.0:
            continue
        why = _tradeoff_failures(r, floor, evidence)
        if why:
            out["rejected"].append({"cell": r["cell"], "why": why})
        else:
            ok.append(r)
    if not ok:
        why = "; ".join(f"{x['cell']}: {x['why']}" for x in out["rejected"])
        reason = f"no ablated cell qualifies ({why})" if why else "the sweep has no ablated cell (scale != 1)"
        return {**out, "reason": reason}

    def relative(r: dict) -> float:
        return (base["bt_rate"] - r["bt_rate"]) / base["bt_rate"]

    best = max(ok, key=lambda r: (relative(r), r["accuracy"]))
    return {**out, **best, "relative_bt_reduction": relative(best)}


def _tradeoff_failures(r: dict, floor: float, evidence: Evidence) -> str:
    """Why an ablated cell is not a trade-off ('' when it qualifies)."""
    if not r["n"]:
        return "no completions"
    k, probs = r["bt_pairs"], r["bt_pair_problems"]
    lo, hi = r["delta_bt_lo"], r["delta_bt_hi"]
    change = f"paired BT change {100 * r['delta_bt']:+.1f} points [{100 * lo:.1f}, {100 * hi:.1f}]"
    why = []
    if not evidence.enough(k, probs):
        why.append(f"too few to test: {k} pairs with a BT event from {probs} problems")
    elif not evidence.excludes(lo, hi, 0.0, k, probs):
        why.append(f"{change} is zero-width" if lo == hi else f"{change} does not exclude 0")
    elif lo > 0:
        why.append(f"BT rises: {change}")
    if not r["accuracy"] >= floor:
        why.append(f"accuracy {100 * r['accuracy']:.1f}% is below the floor {100 * floor:.1f}%")
    return " and ".join(why)


def scale_one_identical(events: pl.DataFrame, cells: Sequence[SweepCell]) -> dict:
    """Scale-1.0 cells must equal the baseline cell token for token (hooks at 1.0 are exact no-ops)."""
    base_key = next(c.key for c in cells if c.subset == "baseline")
    base = events.filter(pl.col("condition") == base_key).select(
        "example_id", "sample_id", "completion_token_ids"
    )
    checked, mismatches = [], 0
    for c in cells:
        if c.scale == 1.0 and c.subset != "baseline":
            rows = events.filter(pl.col("condition") == c.key).join(
                base, on=["example_id", "sample_id"], suffix="_base"
            )
            mismatches += int((rows["completion_token_ids"] != rows["completion_token_ids_base"]).sum())
            checked.append(c.key)
    return {"passed": mismatches == 0, "cells_checked": checked, "mismatched_rows": mismatches}


def hook_problems(counts: pl.DataFrame, cells: Sequence[Cell]) -> list[str]:
    """Ablated components (scale != 1 in a generation cell's ``scales``) must never be applied in
    prefill and must fire in decode; ``counts``: hook calls per cell, component, layer and phase."""
    out = []
    for cell in cells:
        for (comp, layer), scale in cell.scales.items():
            if scale == 1.0:
                continue
            sel = counts.filter(
                (pl.col("cell") == cell.key) & (pl.col("component") == comp) & (pl.col("layer") == layer)
            )
            pre = sel.filter(pl.col("phase") == "prefill")["applied"].sum()
            dec = sel.filter(pl.col("phase") == "decode")["applied"].sum()
            if pre:
                out.append(f"{cell.key}: {comp}{layer} applied {pre}x during prefill")
            if not dec:
                out.append(f"{cell.key}: {comp}{layer} never applied during decode")
    return out


# continuation_summary: per-event column -> summary name; each mean gets a problem-clustered interval
CONTINUATION_MEANS = {
    "onset_family_prob": "p_onset_mean",
    "onset_logit": "logit_mean",
    "onset_family_prob_drop": "p_onset_drop_mean",
    "onset_logit_drop": "logit_drop_mean",
    "synonym_family_prob": "p_synonym_mean",
    "top1_is_synonym": "synonym_share",  # 0/1 per event: shares are means with the same interval
    "top1_is_onset": "onset_top1_share",
}
PROBABILITY_MEANS = ("p_onset_mean", "p_synonym_mean", "synonym_share", "onset_top1_share")


def continuation_summary(df: pl.DataFrame) -> pl.DataFrame:
    """Per scale (1.0 = clean), over the BT events ``n`` from ``n_problems`` problems (the example_id of
    each ``event`` key, ``stats.problem_of``), the mean of each ``CONTINUATION_MEANS`` column with a
    problem-clustered 95% t-interval ``<name>_lo/_hi`` (``stats.clustered_mean_interval``: events of one
    problem are not independent; null with events from a single problem; probabilities clipped to
    [0, 1]): ``p_onset_mean`` (P(onset token family)), ``logit_mean`` (the onset token's logit),
    ``p_onset_drop_mean`` / ``logit_drop_mean`` (the PAIRED clean-minus-ablated drop per event: the
    same event's clean row is its pair), ``p_synonym_mean`` (P(synonym family)), ``synonym_share`` /
    ``onset_top1_share`` (the share of events whose top-1 token is in the synonym / onset family)."""
    if df.height == 0:
        return pl.DataFrame(schema={"scale": pl.Float64, "n": pl.Int64})
    df = df.with_columns(pl.Series("_problem", [problem_of(k) for k in df["event"]], pl.String))
    g = (
        df.group_by("scale")
        .agg(
            pl.len().alias("n"),
            pl.col("_problem").n_unique().alias("n_problems"),
            *(pl.col(c).cast(pl.Float64).mean().alias(name) for c, name in CONTINUATION_MEANS.items()),
        )
        .sort("scale", descending=True)
    )
    bounds: dict[str, list[float | None]] = {
        f"{n}_{e}": [] for n in CONTINUATION_MEANS.values() for e in ("lo", "hi")
    }
    for scale in g["scale"]:
        rows = df.filter(pl.col("scale") == scale)
        for col, name in CONTINUATION_MEANS.items():
            ok = rows.filter(pl.col(col).is_not_null())
            values = ok[col].cast(pl.Float64).to_numpy()
            _, _, lo, hi = clustered_mean_interval(values, ok["_problem"].to_numpy())
            bounds[f"{name}_lo"].append(lo if np.isfinite(lo) else None)
            bounds[f"{name}_hi"].append(hi if np.isfinite(hi) else None)
    cols = []
    for key, values in bounds.items():
        series = pl.Series(key, values, pl.Float64)
        cols.append(series.clip(0.0, 1.0) if key.rsplit("_", 1)[0] in PROBABILITY_MEANS else series)
    return g.with_columns(cols)
