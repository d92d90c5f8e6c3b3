"""The trade-off frontier of every intervention family: BT rate against accuracy (left) and against
mean generated tokens (right), one point per cell with its 95% bootstrap-over-problems intervals."""

from __future__ import annotations

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from bt_assets.lib.plots.common import VARIANT_COLORS, Frame, interval, new_figure, read_table

KIND_STYLE = {  # kind -> (colour, marker)
    "baseline": ("#2ca02c", "s"),
    "scale": (VARIANT_COLORS[0], "o"),
    "mean": (VARIANT_COLORS[1], "D"),
    "heads": (VARIANT_COLORS[2], "^"),
    "steer": (VARIANT_COLORS[3], "v"),
    "token_ban": ("#d62728", "X"),
}


def tradeoff_frontier(rows: Frame) -> Figure:
    """``frontier.frontier_table`` rows (cell, intervention, kind, strength, noop, bt_rate(_lo/_hi),
    accuracy(_lo/_hi), mean_tokens, n, pareto) in percent: every cell of every kind, Pareto-optimal
    cells ringed, the baseline a green square; error bars are the cells' 95% intervals. No-op cells
    (which equal the baseline) are left out. Raises without rows or without any rate."""
    cols = ["cell", "intervention", "kind", "strength", "noop", "n", "mean_tokens", "pareto"]
    t = read_table("tradeoff_frontier", rows, [*cols, *interval("bt_rate"), *interval("accuracy")])
    df = t.df.filter(~t.df["noop"] | (t.df["kind"] == "baseline"))
    t.require_values("bt_rate", "accuracy")
    with new_figure(
        1,
        2,
        figsize=(14, 6),
        suptitle="Intervention trade-off frontier: every family on the same axes (decode-only, paired cells)",
        titles=["BT rate vs accuracy (ringed: Pareto-optimal)", "BT rate vs mean generated tokens"],
        xlabels=["backtracking rate (%)", "backtracking rate (%)"],
    ) as (fig, (left, right)):
        left.set_ylabel("accuracy (%)")
        labels: dict[tuple[float, float], list[str]] = {}
        right.set_ylabel("mean generated tokens")
        for kind, (color, marker) in KIND_STYLE.items():
            sub = df.filter(df["kind"] == kind)
            if sub.height == 0:
                continue
            x, xlo, xhi = (100 * sub[c].cast(float).fill_null(np.nan).to_numpy() for c in interval("bt_rate"))
            y, ylo, yhi = (
                100 * sub[c].cast(float).fill_null(np.nan).to_numpy() for c in interval("accuracy")
            )
            xerr = np.nan_to_num(np.vstack([x - xlo, xhi - x]).clip(min=0))
            yerr = np.nan_to_num(np.vstack([y - ylo, yhi - y]).clip(min=0))
            style = {"color": color, "marker": marker, "linestyle": "none", "capsize": 3, "markersize": 8}
            left.errorbar(x, y, xerr=xerr, yerr=yerr, label=f"{kind} ({sub.height})", **style)
            right.errorbar(x, sub["mean_tokens"].cast(float).to_numpy(), xerr=xerr, **style)
            for xi, yi, name, s, p in zip(
                x, y, sub["intervention"], sub["strength"], sub["pareto"], strict=True
            ):
                label = "baseline" if kind == "baseline" else f"{name} {s:g}"
                labels.setdefault((round(float(xi), 1), round(float(yi), 1)), []).append(label)
                if p:
                    left.plot([xi], [yi], marker="o", markersize=16, markerfacecolor="none", color="black")
        for (xi, yi), names in labels.items():  # cells on one point share one label, not a pile of text
            left.annotate(", ".join(names), (xi, yi), xytext=(6, 6), textcoords="offset points", fontsize=7)
        # percent axes from 0 (half a point below, so points at 0 show): never a sub-point or negative range
        left.set_ylim(-0.5, max(10.0, min(100.0, _top(df, "accuracy_hi") + 5)))
        for ax in (left, right):
            ax.set_xlim(-0.5, max(10.0, min(100.0, _top(df, "bt_rate_hi") + 5)))
        right.margins(y=0.1)
        left.legend(title="kind (cells)", fontsize=8, loc="best")
    return fig


def _top(df: pl.DataFrame, column: str) -> float:
    """The largest finite value of ``column`` in percent (0 without one)."""
    top = df[column].cast(float).fill_null(0.0).fill_nan(0.0).max()
    return 100 * float(top or 0.0)
