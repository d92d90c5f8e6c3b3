"""Phase-1 figures: backtracking rate and accuracy per prompt variant and ablation condition, accuracy
with vs without backtracking, the logit lens and the single-component ablation scan.

Every builder returns a ``Figure`` (write it with ``save``). Rates are drawn in percent with their 95%
bootstrap intervals over problems (``<rate>_lo`` / ``<rate>_hi``) as error bars; the denominator of
every rate is ``n``, all completions of the group (an unanswered completion counts as not correct).
What raises ``FigureDataError``: no rows, an absent column, a value that is no number, or every
plotted value null.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from bt_assets.lib.hooks import COMPONENTS
from bt_assets.lib.plots import common
from bt_assets.lib.plots.common import (
    BT,
    CONTROL,
    NEGATIVE,
    POSITIVE,
    RATE_PANELS,
    Frame,
    interval,
    new_figure,
    note,
    note_no_events,
    read_table,
    table_rate_bars,
    total,
    variant_colors,
)

LENS_KINDS = (("bt", BT, "o", "backtracking onset"), ("control", CONTROL, "s", "position-matched control"))
STATISTICS = {"delta_logit": "logit", "delta_logprob": "log-prob"}
SCAN_BARS: dict[str, Any] = {  # style of the ablation-scan bars (thinner than the percent bars)
    "edgecolor": "0.25",
    "linewidth": 0.5,
    "width": 0.75,
    "capsize": 2,
    "error_kw": {"elinewidth": 0.9, "ecolor": "0.2"},
}

BOOT_BARS = "95% intervals (bootstrap over problems)"


def bt_rate_by_variant(rows: Frame, *, scope: str = "baseline condition only") -> Figure:
    """One bar per prompt variant (input order): strict backtracking rate in percent = ``bt_count`` /
    ``n`` completions, error bars the 95% interval ``bt_rate_lo`` / ``bt_rate_hi`` (bootstrap over problems).

    ``rows``: variant, n, bt_count, bt_rate, bt_rate_lo, bt_rate_hi (baseline rows only). Zero events in
    all variants draws 0% bars with a note; raises when every ``bt_rate`` is null/NaN."""
    t = read_table("bt_rate_by_variant", rows, ["variant", "n", "bt_count", *interval("bt_rate")])
    t.require_values("bt_rate")
    names, n, events = t.text("variant"), t.num("n"), total(t.num("bt_count"))
    with new_figure(
        suptitle=f"Backtracking rate by prompt variant — {scope}",
        titles=[f"n={total(n):,} completions, {events:,} with backtracking; bars: {BOOT_BARS}"],
        xlabels=["prompt variant (n = completions)"],
    ) as (fig, (ax,)):
        table_rate_bars(ax, t, names, "bt_rate", variant_colors(names), "completions with backtracking (%)")
        if events == 0:
            note_no_events(ax, total(n))
    return fig


def accuracy_by_bt(
    rows: Frame,
    *,
    lift: float | None = None,
    lift_ci: Sequence[float] | None = None,
    scope: str = "baseline condition only",
) -> Figure:
    """One bar per group (input order; "without ..." groups orange, others blue): accuracy in percent =
    ``correct`` / ``n`` (all completions of the group), error bars the 95% problem-bootstrap interval
    ``accuracy_lo`` / ``accuracy_hi``; the title carries ``lift`` (accuracy with / without BT) and its
    95% problem-bootstrap ``lift_ci``.

    ``rows``: group, n, correct, accuracy, accuracy_lo, accuracy_hi. A with-BT group of n=0 draws an
    "n/a" bar and a note; raises when every ``accuracy`` is null/NaN."""
    t = read_table("accuracy_by_bt", rows, ["group", "n", "correct", *interval("accuracy")])
    t.require_values("accuracy")
    names, n = t.text("group"), t.num("n")
    without = np.array([s.lower().startswith("without") for s in names])
    with new_figure(
        suptitle=f"Accuracy with vs without backtracking — {scope}",
        titles=[f"n={total(n):,} completions; {common.lift_text(lift, lift_ci)}; bars: {BOOT_BARS}"],
        xlabels=["completions grouped by strict backtracking (n = completions)"],
    ) as (fig, (ax,)):
        correct = [f"{common.fmt_n(c)} correct" if np.isfinite(c) else "" for c in t.num("correct")]
        colors = [CONTROL if w else BT for w in without]
        label = "accuracy (% correct of all completions in group)"
        table_rate_bars(ax, t, names, "accuracy", colors, label, tick_extra=correct)
        if (~without).any() and not np.nansum(n[~without]):
            note_no_events(ax, total(n))
    return fig


def logit_lens(df: Frame) -> Figure:
    """Mean logit of the onset token per layer (logit lens: residual stream through the final norm and
    unembedding), one line for backtracking onsets and one for position-matched controls, shaded bands
    the 95% interval over events ``mean_target_logit_<kind>_lo/_hi``; ``n_<kind>`` events in the legend.

    ``df``: layer, mean_target_logit_bt(_lo/_hi), n_bt and the same with ``_control``. One kind all
    null draws the other with a note; raises when both (or every layer) are null/NaN."""
    cols = [c for k, *_ in LENS_KINDS for c in (*interval(f"mean_target_logit_{k}"), f"n_{k}")]
    t = read_table("logit_lens", df, ["layer", *cols]).sorted("layer")
    t.require_values("layer")
    t.require_values("mean_target_logit_bt", "mean_target_logit_control")
    layer = t.num("layer")
    ns = {k: int(np.nanmax(a)) if np.isfinite(a := t.num(f"n_{k}")).any() else 0 for k, *_ in LENS_KINDS}
    with new_figure(
        suptitle="Logit lens: onset-token logit by layer, backtracking events vs controls",
        titles=[
            f"BT events n={ns['bt']:,}, position-matched controls n={ns['control']:,}; "
            "lines: mean, bands: 95% CI"
        ],
        xlabels=["layer (logit lens: residual stream through the final norm and unembedding)"],
    ) as (fig, (ax,)):
        ax.set_ylabel("mean logit of the onset token")
        drawn = []
        for kind, color, marker, label in LENS_KINDS:
            mean, lo, hi = (t.num(c) for c in interval(f"mean_target_logit_{kind}"))
            if not np.isfinite(mean).any():
                continue
            ax.plot(
                layer,
                mean,
                color=color,
                marker=marker,
                markersize=5,
                linewidth=1.8,
                label=f"{label} (n={ns[kind]:,})",
            )
            if np.isfinite(lo).any() and np.isfinite(hi).any():
                ax.fill_between(layer, lo, hi, color=color, alpha=0.2, linewidth=0)
            drawn.append(kind)
        if len(drawn) == 1:
            note(ax, f"no {'backtracking events' if drawn == ['control'] else 'controls'} (n=0)", y=0.9)
        ax.legend(loc="best", frameon=True)
        if len(layer) <= 40:
            ax.set_xticks(layer[np.isfinite(layer)])
            ax.tick_params(axis="x", labelsize=8)
    return fig


def ablation_importance(
    df: Frame, statistic: str = "delta_logit", *, selected: Mapping[str, Sequence[int]] | None = None
) -> Figure:
    """One panel per component (attn, mlp, then others), one bar per ablated layer (sorted by layer): the
    mean over ``n_events`` BT events of the change in the onset-token statistic at the onset position
    when that layer's output is ablated (ablated - clean), error bars the 95% interval. Negative bars
    red, others grey; layers in ``selected[component]`` hatched with a black edge; a null mean "n/a".

    ``statistic``: ``delta_logit`` or ``delta_logprob`` selects ``<statistic>_mean`` and its
    ``_lo/_hi``. ``df``: layer, component, those three columns, n_events. A component whose means are
    all null draws a note; raises when every mean is null/NaN."""
    if statistic not in STATISTICS:
        raise ValueError(
            f"ablation_importance: statistic must be one of {sorted(STATISTICS)}, not {statistic!r}"
        )
    mean_c, lo_c, hi_c = interval(f"{statistic}_mean")
    t = read_table("ablation_importance", df, ["layer", "component", mean_c, lo_c, hi_c, "n_events"])
    t.require_values(mean_c)
    comps = t.text("component")
    order = [c for c in COMPONENTS if c in comps] + sorted(set(comps) - set(COMPONENTS))
    n_events = t.num("n_events")
    n = int(np.nanmax(n_events)) if np.isfinite(n_events).any() else 0
    what = STATISTICS[statistic]
    sel = {str(k): {int(x) for x in v if common.finite(x)} for k, v in (selected or {}).items()}
    titles = [
        f"{comp}: one bar per ablated layer (n={n:,} events each)"
        + (f"; selected layers {sorted(sel[comp])}" if sel.get(comp) else "")
        for comp in order
    ]
    with new_figure(
        len(order),
        1,
        figsize=(12, 3.6 * len(order) + 0.6),
        suptitle=f"Single-component ablation scan: change in onset-token {what} at the onset position "
        f"(n={n:,} BT events; mean and 95% CI)",
        titles=titles,
    ) as (fig, axes):
        for ax, comp in zip(axes, order, strict=True):
            sub = t.where([x == comp for x in comps]).sorted("layer")
            layer, mean, lo, hi = (sub.num(col) for col in ("layer", mean_c, lo_c, hi_c))
            chosen = sel.get(comp, set())
            ax.set_ylabel(f"Δ onset {what}\n(ablated − clean)")
            ax.axhline(0, color="black", linewidth=0.9)
            if not (np.isfinite(mean) & np.isfinite(layer)).any():
                ax.set_xlim(-0.6, max(len(layer), 1) - 0.4)
                note(ax, f"no values for component '{comp}' (all null/NaN)")
                continue
            colors = [NEGATIVE if m < 0 else POSITIVE for m in mean]
            bars = common.interval_bars(ax, layer, mean, lo, hi, colors, **SCAN_BARS)
            for b, lay, m in zip(bars, layer, mean, strict=True):
                if np.isfinite(lay) and int(lay) in chosen:
                    b.set_hatch("///")
                    b.set_edgecolor("black")
                    b.set_linewidth(1.6)
                if not np.isfinite(m):
                    ax.text(lay, 0, "n/a", ha="center", va="bottom", fontsize=7, color="0.4")
            if len(layer) <= 40:
                ax.set_xticks(layer[np.isfinite(layer)])
                ax.tick_params(axis="x", labelsize=8)
            ax.set_xlim(np.nanmin(layer) - 0.6, np.nanmax(layer) + 0.6)
        axes[-1].set_xlabel("layer")
        handles = [
            Patch(fc=NEGATIVE, ec="0.25", label="negative: ablation lowers the onset token"),
            Patch(fc=POSITIVE, ec="0.25", label="positive / zero"),
        ]
        if sel:
            handles.append(Patch(fc="white", ec="black", hatch="///", lw=1.6, label="selected for ablation"))
        axes[0].legend(handles=handles, loc="best", fontsize=8, frameon=True)
    return fig


def _two_rate_panels(
    figure: str, rows: Frame, key: str, title: str, xlabel: str, colors: Callable[[list[str]], list[str]]
) -> Figure:
    """Left: backtracking rate, right: accuracy, one bar per ``key`` value (input order), in percent of
    ``n`` completions with 95% problem-bootstrap error bars. Raises when both rate columns are all
    null/NaN."""
    t = read_table(figure, rows, [key, "n", "bt_count", *interval("bt_rate"), *interval("accuracy")])
    t.require_values("bt_rate", "accuracy")
    names, n = t.text(key), t.num("n")
    with new_figure(
        1,
        2,
        figsize=(13, 6),
        suptitle=f"{title} (n={total(n):,} completions)",
        titles=[
            f"{label.split(' (')[0]} per {key}, {common.n_text(n)}; 95% intervals (bootstrap over problems)"
            for _, label in RATE_PANELS
        ],
        xlabels=[xlabel, xlabel],
    ) as (fig, axes):
        for ax, (metric, label) in zip(axes, RATE_PANELS, strict=True):
            table_rate_bars(ax, t, names, metric, colors(names), label)
        if total(t.num("bt_count")) == 0:
            note_no_events(axes[0], total(n))
    return fig


def by_condition(rows: Frame, *, variant: str | None = None) -> Figure:
    """Backtracking rate (left) and accuracy (right) per ablation condition, in percent of ``n``
    completions with 95% problem-bootstrap intervals; baseline green, targeted red, random grey.

    ``rows``: condition, n, bt_count, bt_rate(_lo/_hi), accuracy(_lo/_hi) (any list of conditions)."""
    scope = f"prompt variant {variant}" if variant else "one prompt variant"
    return _two_rate_panels(
        "by_condition",
        rows,
        "condition",
        f"Backtracking rate and accuracy by ablation condition — {scope}",
        "ablation condition (n = completions)",
        lambda ns: [common.role_color(s) for s in ns],
    )


def formatting_effect(rows: Frame, *, scope: str = "baseline condition only") -> Figure:
    """Backtracking rate (left) and accuracy (right) per prompt-formatting variant, in percent of ``n``
    completions with 95% problem-bootstrap intervals.

    ``rows``: variant, n, bt_count, bt_rate(_lo/_hi), accuracy(_lo/_hi) (baseline rows only)."""
    return _two_rate_panels(
        "formatting_effect",
        rows,
        "variant",
        f"Effect of prompt formatting — {scope}",
        "prompt variant (n = completions)",
        variant_colors,
    )
