"""Phase-2 tables: per-cell rates with intervals and the paired change vs the baseline cell.

All cells of a sweep share random numbers per (problem, sample) (counter-based sampling), so a cell and
the baseline form pairs; the change is the mean paired difference, with a 95% bootstrap interval that
resamples PROBLEMS (samples of one problem are correlated). Accuracy = correct / all completions (an
unanswered completion counts as not correct); that one denominator is used everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from bt_assets.lib.events import bt_column, correct_column
from bt_assets.lib.rates import rate_row
from bt_assets.lib.stats import cluster_bootstrap, t_quantile_975
from bt_assets.lib.sweeps import SweepCell

if TYPE_CHECKING:
    from bt_assets.lib.generation import Cell


def paired_change(problem: np.ndarray, diff: np.ndarray, seed: int) -> tuple[float, float, float]:
    """Mean per-pair difference and its 95% interval, resampling problems (clusters)."""
    if diff.size == 0:
        return float("nan"), float("nan"), float("nan")
    lo, hi = cluster_bootstrap(problem, [diff], np.mean, seed=seed)
    return float(diff.mean()), lo, hi


def cell_stats(rows: pl.DataFrame, base: pl.DataFrame, bt: str, ok: str, seed: int) -> dict:
    """One sweep cell: the ``rates.RATE_SCHEMA`` columns over its completions (BT rate and accuracy =
    correct / all completions, Wilson 95% ``bt_rate_lo/_hi``, ``accuracy_lo/_hi``), ``mean_tokens``,
    ``truncated_share`` (completions that stopped at the token cap / all), and the paired change vs
    the baseline cell ``base`` (same problem and sample): ``delta_bt`` / ``delta_acc`` = mean per-pair
    difference (cell minus baseline) with ``_lo/_hi`` from a 95% bootstrap over problems; ``n_pairs``,
    and ``bt_pairs`` / ``bt_pair_problems``: pairs where either side backtracks, and their problems."""
    n = rows.height
    k_bt = int(rows[bt].sum()) if n else 0
    k_ok = int(rows[ok].fill_null(False).sum()) if n else 0
    out: dict = {
        **rate_row(n, k_bt, k_ok),
        "mean_tokens": float(rows["completion_tokens"].mean()) if n else float("nan"),
        "truncated_share": float((rows["finish_reason"] == "length").mean()) if n else 0.0,
    }
    pairs = rows.join(base, on=["example_id", "sample_id"], suffix="_base")
    prob = pairs["example_id"].to_numpy()
    for name, col in (("bt", bt), ("acc", ok)):
        d = pairs[col].fill_null(False).cast(pl.Int8) - pairs[f"{col}_base"].fill_null(False).cast(pl.Int8)
        mean, lo, hi = paired_change(prob, d.to_numpy().astype(float), seed)
        out[f"delta_{name}"], out[f"delta_{name}_lo"], out[f"delta_{name}_hi"] = mean, lo, hi
    out["n_pairs"] = pairs.height
    # the BT evidence behind the paired change: pairs where either side backtracks, and their problems
    either = pairs.filter(pl.col(bt).fill_null(False) | pl.col(f"{bt}_base").fill_null(False))
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
) -> dict:
    """Subset table, scale table, per-cell stats and the best trade-off (largest relative BT reduction
    among cells keeping accuracy >= ``min_accuracy_fraction`` x baseline accuracy).

    Every row is ``cell``, ``subset``, ``scale``, ``n_components`` (components the cell scales, from
    ``n_components``; 0 when absent), ``sweeps`` and the ``cell_stats`` columns; BT and correctness are
    read from the columns of ``detection_mode`` / ``grading_mode``."""
    bt, ok = bt_column(detection_mode), correct_column(grading_mode)
    base_key = next(c.key for c in cells if c.subset == "baseline")
    base = events.filter(pl.col("condition") == base_key).select("example_id", "sample_id", bt, ok)
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
            }
        )
    base_row = next(r for r in per_cell if r["cell"] == base_key)
    subset = [r for r in per_cell if "subset" in r["sweeps"].split(",")]
    scale = sorted(
        (r for r in per_cell if "scale" in r["sweeps"].split(",") and r["subset"] != "baseline"),
        key=lambda r: r["scale"],
    )
    best = best_tradeoff(per_cell, base_row, min_accuracy_fraction)
    return {
        "cells": per_cell,
        "subset": subset,
        "scale": scale,
        "best_tradeoff": best,
        "baseline": base_row,
        "detection_mode": detection_mode,
        "grading_mode": grading_mode,
        "accuracy_denominator": "all completions (no answer = not correct)",
    }


def best_tradeoff(rows: Sequence[dict], base: dict, min_fraction: float) -> dict | None:
    """The ablated cell (scale != 1) with the largest relative BT reduction (base - cell) / base among
    cells whose accuracy is >= ``min_fraction`` x the baseline's (ties: higher accuracy); None when no
    cell qualifies or the baseline has no BT. Adds ``relative_bt_reduction`` and ``accuracy_floor``."""
    floor = min_fraction * base["accuracy"] if base["n"] else float("nan")
    ok = [
        r
        for r in rows
        if r["cell"] != base["cell"]
        and r["n"]
        and r["accuracy"] >= floor
        and base["bt_rate"] > 0
        and r["scale"] != 1.0
    ]
    if not ok:
        return None
    best = max(ok, key=lambda r: ((base["bt_rate"] - r["bt_rate"]) / base["bt_rate"], r["accuracy"]))
    return {
        **best,
        "relative_bt_reduction": (base["bt_rate"] - best["bt_rate"]) / base["bt_rate"],
        "accuracy_floor": floor,
    }


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


def continuation_summary(df: pl.DataFrame) -> pl.DataFrame:
    """Per scale (1.0 = clean), over the BT events ``n``: ``p_onset_mean`` (mean probability of the onset
    token) and ``logit_mean`` with 95% t-intervals over events ``p_onset_mean_lo/_hi`` (clipped to
    [0, 1]) and ``logit_mean_lo/_hi`` (null for a single event); ``synonym_share`` / ``onset_top1_share``:
    events whose top-1 token is a synonym of the onset / the onset itself, over ``n``."""
    if df.height == 0:
        return pl.DataFrame(schema={"scale": pl.Float64, "n": pl.Int64})
    g = (
        df.group_by("scale")
        .agg(
            pl.len().alias("n"),
            pl.col("onset_prob").mean().alias("p_onset_mean"),
            pl.col("onset_prob").std().alias("p_sd"),
            pl.col("onset_logit").mean().alias("logit_mean"),
            pl.col("onset_logit").std().alias("l_sd"),
            pl.col("top1_is_synonym").mean().alias("synonym_share"),
            pl.col("top1_is_onset").mean().alias("onset_top1_share"),
        )
        .sort("scale", descending=True)
    )
    # t-interval half-width per row; null (no interval) for a single event; probabilities clipped to [0, 1]
    half = pl.Series([t_quantile_975(n - 1) / n**0.5 if n > 1 else None for n in g["n"]], dtype=pl.Float64)
    g = g.with_columns(half.alias("_half"))
    return g.with_columns(
        (pl.col("p_onset_mean") - pl.col("_half") * pl.col("p_sd")).clip(0.0, 1.0).alias("p_onset_mean_lo"),
        (pl.col("p_onset_mean") + pl.col("_half") * pl.col("p_sd")).clip(0.0, 1.0).alias("p_onset_mean_hi"),
        (pl.col("logit_mean") - pl.col("_half") * pl.col("l_sd")).alias("logit_mean_lo"),
        (pl.col("logit_mean") + pl.col("_half") * pl.col("l_sd")).alias("logit_mean_hi"),
    ).drop("p_sd", "l_sd", "_half")
