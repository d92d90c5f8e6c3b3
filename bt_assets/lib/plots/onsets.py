"""Figures of what happens at the backtracking onset under an intervention: the onset phrases of each
sweep cell (does ablation swap "Wait" for "Actually"?) and the onset resamples (does the same prefix
backtrack again, clean and with the onset steps ablated?)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from bt_assets.lib.plots.common import (
    BASELINE,
    TARGETED,
    VARIANT_COLORS,
    FigureDataError,
    Frame,
    interval,
    new_figure,
    rate_bars,
    read_table,
)

OTHER = "other"
MAX_PHRASES = 5  # phrases drawn by name (the most frequent over all cells); the rest are "other"


def onset_phrases(rows: Frame, *, cells: Mapping[str, int]) -> Figure:
    """One horizontal bar per sweep cell (``cells``: cell key -> its number of completions, in drawing
    order), split by onset phrase: the share of the cell's BT completions that open with each phrase
    (``onset_phrases.phrase_table`` rows: cell, phrase, n, n_bt, share), in percent; the
    ``MAX_PHRASES`` most frequent phrases over all cells by name, the rest as "other". Tick labels carry
    n_bt of n (the share's denominator and the cell's completions); a cell without a BT completion keeps
    its row, empty and marked "no BT completion", so zero is shown as a measured zero. Raises when there
    are no cells."""
    if not cells:
        raise FigureDataError("onset_phrases: no sweep cells to draw")
    df = read_table("onset_phrases", rows, ["cell", "phrase", "n", "n_bt", "share"], allow_empty=True).df
    if df.width == 0:
        df = pl.DataFrame(schema={"cell": pl.String, "phrase": pl.String, "n": pl.Int64, "n_bt": pl.Int64})
    counts: dict[str, int] = {}
    for p, n in zip(df["phrase"].to_list(), df["n"].to_list(), strict=True):
        counts[p] = counts.get(p, 0) + int(n)
    named = sorted(counts, key=lambda p: (-counts[p], p))[:MAX_PHRASES]
    order = list(cells)
    legend = [*named, *([OTHER] if len(counts) > len(named) else [])]
    share = np.zeros((len(order), len(legend)))
    n_bt = np.zeros(len(order))
    for r in df.iter_rows(named=True):
        if r["cell"] not in cells:
            continue
        i = order.index(r["cell"])
        j = legend.index(r["phrase"] if r["phrase"] in named else OTHER)
        share[i, j] += 100 * float(r["share"])
        n_bt[i] = r["n_bt"]
    with new_figure(
        figsize=(11, 1.6 + 0.55 * len(order)),
        suptitle="Onset phrases per cell: which phrase opens each backtracking completion",
        titles=["share of the cell's BT completions (n_bt of n completions) opening with each phrase"],
        xlabels=["share of BT completions (%)"],
    ) as (fig, (ax,)):
        y = np.arange(len(order))
        left = np.zeros(len(order))
        for j, phrase in enumerate(legend):
            color = "0.75" if phrase == OTHER else VARIANT_COLORS[j % len(VARIANT_COLORS)]
            ax.barh(y, share[:, j], left=left, color=color, edgecolor="black", linewidth=0.5, label=phrase)
            for yi, x0, w in zip(y, left, share[:, j], strict=True):
                if w >= 8:
                    ax.text(x0 + w / 2, yi, f"{w:.0f}%", ha="center", va="center", fontsize=8)
            left += share[:, j]
        for yi, k in zip(y, n_bt, strict=True):
            if k == 0:
                ax.text(1, yi, "no BT completion", ha="left", va="center", fontsize=8, color="0.35")
        labels = [f"{c}\n(n_bt={int(k)} of {cells[c]})" for c, k in zip(order, n_bt, strict=True)]
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_ylim(len(order) - 0.5, -0.5)  # first cell on top, half a row of margin (empty rows too)
        ax.set_xlim(0, 100)
        if legend:
            ax.legend(title="onset phrase", loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    return fig


def onset_resamples(summary: dict, *, first_k_steps: int, window_tokens: int) -> Figure:
    """Clean vs ablated continuations resampled from the prefix before each BT onset
    (``onset_resample.resample_summary``): left P(BT within ``window_tokens`` tokens), right accuracy
    among the continuations that finished, each in percent with its 95% bootstrap interval over problems
    (n = continuations, resp. finished ones); tick labels carry the top opening phrases. The clean rate is
    the onsets' stability. Raises when the summary has no conditions (no BT event was resampled)."""
    conds = summary.get("conditions") or {}
    if not conds:
        raise FigureDataError("onset_resamples: no resampled events (no conditions in the summary)")
    names = list(conds)
    rows = [conds[c] for c in names]
    colors = [BASELINE if c == "clean" else TARGETED for c in names]
    paired = summary.get("paired") or {}
    delta = paired.get("delta_bt")
    sub = "" if delta is None else f"; paired change {100 * delta:+.1f} points over {paired['n_pairs']} pairs"
    with new_figure(
        1,
        2,
        figsize=(12, 5.5),
        suptitle=f"Onset resamples: subset ablated for the first {first_k_steps} step(s) at the onset{sub}",
        titles=[
            f"P(backtracking within {window_tokens} tokens); error bars: 95% CI",
            "accuracy among finished",
        ],
        xlabels=[
            "condition (n = continuations; top opening phrases)",
            "condition (n = finished continuations)",
        ],
    ) as (fig, (left, right)):

        def col(key: str) -> np.ndarray:
            return np.array([np.nan if r[key] is None else float(r[key]) for r in rows])

        phrases = [r["first_phrases"] for r in rows]
        bt = [col(k) for k in interval("bt_rate")]
        rate_bars(left, names, col("n"), *bt, colors, "BT within window (%)", tick_extra=phrases)
        acc = [col(k) for k in interval("accuracy_finished")]
        rate_bars(right, names, col("n_finished"), *acc, colors, "accuracy among finished (%)")
    return fig
