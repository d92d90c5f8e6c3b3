"""Phase-2 figures: the deconfounded baseline summary, the subset and scale sweeps of the ablation, and
the teacher-forced continuation at the onset position.

Every builder returns a ``Figure`` (write it with ``save``). Rates are in percent of ``n`` (all
completions of the cell; an unanswered completion counts as not correct) with 95% bootstrap intervals
over problems;
paired changes ``delta_<rate>`` are cell minus baseline over the same (problem, sample) pairs with 95%
bootstrap intervals over problems, drawn in percentage points. What raises ``FigureDataError``: no rows,
an absent column or key, a value that is no number, or every plotted value null/NaN.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bt_assets.lib.plots import common
from bt_assets.lib.plots.common import (
    ACCURACY,
    BASELINE,
    BT,
    CONTROL,
    RATE_PANELS,
    TARGETED,
    FigureDataError,
    Frame,
    finite,
    fmt_n,
    fmt_pct,
    interval,
    n_text,
    new_figure,
    note,
    note_no_events,
    pct,
    pct_axis,
    read_table,
    require_values,
    table_rate_bars,
    total,
    value,
    yerr,
)

RATES = (*interval("bt_rate"), *interval("accuracy"))
SUMMARY_BARS = (  # key in the summary, bar label, colour
    ("bt_rate", "BT rate", BT),
    ("accuracy", "accuracy", ACCURACY),
    ("acc_with_bt", "accuracy | BT", BT),
    ("acc_without_bt", "accuracy | no BT", CONTROL),
)


def phase2_baseline_summary(
    summary: Mapping[str, Any] | None, by_variant: Frame, *, scope: str = "baseline condition only"
) -> Figure:
    """2x2 over baseline rows only (no ablation): (a) bars of the overall BT rate and accuracy (of all
    ``n`` completions) and the accuracy of completions with / without BT (of n·bt_rate and
    n·(1-bt_rate) completions), 95% problem-bootstrap intervals; (b) the accuracy lift (with / without
    BT) with its 95% problem-bootstrap interval against 1.0x; (c) BT rate and (d) accuracy per prompt variant.

    ``summary`` keys: n, bt_rate, accuracy, acc_with_bt, acc_without_bt, lift, each value with ``_lo``
    and ``_hi`` (None = undefined). ``by_variant``: variant, n, bt_rate(_lo/_hi), accuracy(_lo/_hi); it
    may be empty. An all-null part draws a note; raises when nothing at all has a value."""
    fig_name = "phase2_baseline_summary"
    s = {} if summary is None else summary
    n = value(fig_name, s, "n")
    v, lo, hi = np.array([[value(fig_name, s, c) for c in interval(k)] for k, *_ in SUMMARY_BARS]).T
    lift, lift_lo, lift_hi = (value(fig_name, s, c) for c in interval("lift"))
    dv = read_table(fig_name, by_variant, ["variant", "n", *RATES], allow_empty=True)
    per_variant = {f"by_variant {m}": dv.num(m) for m, _ in RATE_PANELS} if dv.height else {}
    overall = {f"summary {k}": np.array([x]) for (k, *_), x in zip(SUMMARY_BARS, v, strict=True)}
    require_values(fig_name, overall | per_variant)
    n_bt = n * v[0] if finite(n) and finite(v[0]) else common.NAN
    variants, nv = (dv.text("variant"), dv.num("n")) if dv.height else ([], np.array([]))
    per_panel = [
        f"{label.split(' (')[0]} per prompt variant, {n_text(nv)} ({scope})" for _, label in RATE_PANELS
    ]
    titles = [
        "(a) overall rates with 95% intervals (bootstrap over problems)",
        "(b) accuracy lift = accuracy with BT / without BT (95% CI)",
        *(f"{tag} {title}" for tag, title in zip(("(c)", "(d)"), per_panel, strict=True)),
    ]
    with new_figure(
        2,
        2,
        figsize=(14, 11),
        suptitle=f"Phase-2 baseline summary — {scope} (n={fmt_n(n) if finite(n) else 0} completions)",
        titles=titles,
        xlabels=["", "", "prompt variant (n = completions)", "prompt variant (n = completions)"],
    ) as (fig, axes):
        ax = axes[0]  # (a) overall rates
        if not np.isfinite(v).any():
            pct_axis(ax, "percent of completions")
            note(ax, "no overall rates (all null/NaN)", blank_x=True)
        else:
            names = [label for _, label, _ in SUMMARY_BARS]
            ns = np.array([n, n, n_bt, n - n_bt])
            common.rate_bars(ax, names, ns, v, lo, hi, [c for *_, c in SUMMARY_BARS], "percent (%)")
            if n_bt == 0:
                note_no_events(ax, n)
        _lift_panel(axes[1], lift, lift_lo, lift_hi, n_bt, n - n_bt)
        for ax, (metric, label) in zip(axes[2:], RATE_PANELS, strict=True):
            if not per_variant or not np.isfinite(per_variant[f"by_variant {metric}"]).any():
                pct_axis(ax, label)
                note(ax, "no per-variant rows (n=0)", blank_x=True)
            else:
                table_rate_bars(ax, dv, variants, metric, common.variant_colors(variants), label)
    return fig


def _lift_panel(ax: Axes, lift: float, lo: float, hi: float, n_bt: float, n_nb: float) -> None:
    """Panel (b): the lift as a point with its 95% interval, a dashed line at 1.0x, the lift text."""
    ax.set_ylabel("accuracy ratio (with BT / without BT)")
    ax.axhline(1.0, color="0.3", linestyle="--", linewidth=1, label="no difference (1.0x)")
    ax.set_xticks([0], [f"with BT (n={fmt_n(n_bt)}) vs\nwithout BT (n={fmt_n(n_nb)})"])
    ax.set_xlim(-1, 1)
    if not finite(lift):
        ax.set_ylim(0, 2)
        note(ax, "lift undefined: a group is empty or has 0% accuracy")
        return
    err = yerr(np.array([lift]), np.array([lo]), np.array([hi]))
    ax.errorbar([0], [lift], yerr=err, fmt="o", color=BT, markersize=9, capsize=8, elinewidth=2)
    ax.annotate(
        common.lift_text(lift, (lo, hi)),
        (0, lift),
        xytext=(14, 0),
        textcoords="offset points",
        va="center",
        fontsize=10,
    )
    ax.set_ylim(0, max(x for x in (lift, hi, 1.0) if finite(x)) * 1.25 + 0.1)
    ax.legend(loc="lower right", fontsize=8)


def _delta_text(d: float, lo: float, hi: float) -> str:
    """'Δ-3.2 [-5.0, -1.4]' (percentage points); '' when the change is undefined."""
    if not finite(d):
        return ""
    return f"Δ{d:+.1f}" + (f" [{lo:+.1f}, {hi:+.1f}]" if finite(lo) and finite(hi) else "")


def subset_sweep(rows: Frame) -> Figure:
    """Two panels, BT rate (top) and accuracy (bottom), one bar per component subset in input order:
    percent of ``n`` completions with 95% problem-bootstrap error bars, the baseline bar green (the
    ``baseline`` subset, else the first row) and a dashed line at its value; above each other bar the
    paired change vs baseline ``delta_<rate>`` in percentage points with its 95% bootstrap interval over
    problems.

    ``rows``: subset, n_components, n, bt_count, bt_rate(_lo/_hi), accuracy(_lo/_hi),
    delta_bt(_lo/_hi), delta_acc(_lo/_hi). Zero BT events draws a note; raises when both rates are
    all null/NaN."""
    deltas = (*interval("delta_bt"), *interval("delta_acc"))
    t = read_table("subset_sweep", rows, ["subset", "n_components", "n", "bt_count", *RATES, *deltas])
    t.require_values("bt_rate", "accuracy")
    names, n = t.text("subset"), t.num("n")
    base_i = names.index("baseline") if "baseline" in names else 0
    comps = [
        "no ablation" if i == base_i else (f"{int(c)} comp." if finite(c) else "")
        for i, c in enumerate(t.num("n_components"))
    ]
    colors = [BASELINE if i == base_i else common.role_color(s) for i, s in enumerate(names)]
    with new_figure(
        2,
        1,
        figsize=(12, 10),
        sharex=True,
        suptitle="Subset sweep: backtracking rate and accuracy per ablated subset "
        f"({n_text(n).replace('per group', 'completions per arm')}, {total(n):,} in all)",
        titles=[
            f"{label.split(' (')[0]} per arm; bars: 95% CI (bootstrap over problems); Δ = paired change vs "
            "baseline in percentage points [95% bootstrap CI over problems]"
            for _, label in RATE_PANELS
        ],
        xlabels=["", "ablation arm (components scaled to 0 during decoding; n = completions)"],
        title_size=9.5,
    ) as (fig, axes):
        for ax, (metric, label), delta in zip(axes, RATE_PANELS, ("delta_bt", "delta_acc"), strict=True):
            d = zip(*pct(*(t.num(c) for c in interval(delta))), strict=True)
            extra = ["" if i == base_i else _delta_text(*x) for i, x in enumerate(d)]
            table_rate_bars(ax, t, names, metric, colors, label, extra=extra, tick_extra=comps)
            base_v = pct(t.num(metric))[0][base_i]
            if finite(base_v):
                ax.axhline(
                    base_v, color=BASELINE, linestyle="--", linewidth=1.3, label=f"baseline {fmt_pct(base_v)}"
                )
                ax.legend(loc="upper right", fontsize=8, frameon=True)
        if total(t.num("bt_count")) == 0:
            note_no_events(axes[0], total(n))
    return fig


def scale_tradeoff(rows: Frame, *, subset: str | None = None) -> Figure:
    """Left: BT rate and accuracy (percent of ``n`` completions) against the ablation scale (sorted; 1.0
    = no ablation, 0.0 = zeroed) with 95% problem-bootstrap bands; right: accuracy against BT rate, one
    point per scale coloured by the scale and labelled '×scale', error bars the 95% intervals on both axes.

    ``rows``: scale, n, bt_rate(_lo/_hi), accuracy(_lo/_hi). Rows without a scale or with n=0 are left
    out; raises when no row remains or every remaining rate is null/NaN."""
    t = read_table("scale_tradeoff", rows, ["scale", "n", *RATES]).sorted("scale")
    scale, n = t.num("scale"), t.num("n")
    ok = np.isfinite(scale) & (n > 0)
    if not ok.any():
        raise FigureDataError("scale_tradeoff: no row with a finite scale and n > 0 (columns scale, n)")
    bt, bt_lo, bt_hi = (a[ok] for a in pct(*(t.num(c) for c in interval("bt_rate"))))
    acc, acc_lo, acc_hi = (a[ok] for a in pct(*(t.num(c) for c in interval("accuracy"))))
    require_values("scale_tradeoff", {"bt_rate": bt, "accuracy": acc})
    x, what = scale[ok], f"components of {subset}" if subset else "selected components"
    with new_figure(
        1,
        2,
        figsize=(14, 6),
        suptitle=f"Scale sweep: backtracking rate and accuracy as the {what} are scaled "
        f"({n_text(n).replace('per group', 'completions per scale')})",
        titles=[
            "rates vs scale (1.0 = no ablation, 0.0 = zeroed); bands: 95% CI (bootstrap over problems)",
            "accuracy vs backtracking rate, one point per scale (labels: scale; error bars: 95% CI)",
        ],
        xlabels=["ablation scale", "backtracking rate (%)"],
    ) as (fig, (left, right)):
        pct_axis(left, "percent of completions")
        right.set_xlim(0, 105)
        pct_axis(right, "accuracy (%)", x=True)
        for v, lo, hi, color, marker, label in (
            (bt, bt_lo, bt_hi, BT, "o", "backtracking rate"),
            (acc, acc_lo, acc_hi, ACCURACY, "s", "accuracy"),
        ):
            left.plot(x, v, color=color, marker=marker, linewidth=1.8, label=label)
            left.fill_between(x, lo, hi, color=color, alpha=0.18, linewidth=0)
        for xi, ni in zip(x, n[ok], strict=True):
            left.annotate(f"n={fmt_n(ni)}", (xi, 2), ha="center", fontsize=7, color="0.35")
        left.legend(loc="upper right", fontsize=9)
        left.set_xticks(np.unique(x))
        right.errorbar(
            bt,
            acc,
            xerr=yerr(bt, bt_lo, bt_hi),
            yerr=yerr(acc, acc_lo, acc_hi),
            fmt="none",
            ecolor="0.55",
            elinewidth=0.9,
            capsize=3,
            zorder=1,
        )
        vmin, vmax = float(np.min(x)), float(np.max(x))
        sc = right.scatter(
            np.nan_to_num(bt),
            np.nan_to_num(acc),
            c=x,
            cmap="viridis",
            s=70,
            edgecolors="black",
            vmin=vmin,
            vmax=vmax if vmax > vmin else vmin + 1,
            zorder=2,
        )
        for i, (xi, b, a) in enumerate(zip(x, bt, acc, strict=True)):
            if finite(b) and finite(a):  # alternate above / below so neighbouring labels do not collide
                right.annotate(
                    f"×{xi:g}",
                    (b, a),
                    xytext=(0, 9 if i % 2 == 0 else -9),
                    textcoords="offset points",
                    ha="center",
                    va="bottom" if i % 2 == 0 else "top",
                    fontsize=8,
                    clip_on=True,
                )
        fig.colorbar(sc, ax=right, label="ablation scale")
    return fig


def continuation_effect(rows: Frame) -> Figure:
    """Teacher-forced continuation at the onset position, one bar per ablation scale (descending; 1.0 =
    clean, green; others red): left the mean P(onset token) over ``n`` events in percent, right the mean
    onset-token logit; error bars the problem-clustered 95% t-intervals over events (none with events
    from a single problem). Tick labels
    carry ``synonym_share``, the share of events whose new top-1 token is a synonym trigger.

    ``rows``: scale, n, p_onset_mean(_lo/_hi), logit_mean(_lo/_hi), synonym_share. All logits null
    draws a note on the right; raises when no rows (no BT events) or P(onset) and logit are all null."""
    cols = ["scale", "n", *interval("p_onset_mean"), *interval("logit_mean"), "synonym_share"]
    t = read_table("continuation_effect", rows, cols).sorted("scale", descending=True)
    t.require_values("p_onset_mean", "logit_mean")
    scale, n = t.num("scale"), t.num("n")
    syn = pct(t.num("synonym_share"))[0]
    names = [("?" if not finite(s) else f"×{s:g}" + (" (clean)" if s == 1.0 else "")) for s in scale]
    colors = [BASELINE if s == 1.0 else TARGETED for s in scale]
    with new_figure(
        1,
        2,
        figsize=(13, 6),
        suptitle="Continuation ablation at the onset position: does the onset token survive? "
        f"({n_text(n).replace('per group', 'events per scale')})",
        titles=[
            "mean P(onset token family) per scale; error bars: 95% CI",
            "mean onset-token logit per scale; error bars: 95% CI",
        ],
        xlabels=[
            "ablation scale of the ablated components (n = events)",
            "ablation scale (n = events; syn. = share whose top-1 token after ablation\n"
            "is a synonym trigger such as 'Actually')",
        ],
    ) as (fig, (left, right)):
        right.set_ylabel("mean logit of the onset token")
        table_rate_bars(left, t, names, "p_onset_mean", colors, "P(onset token family) (%)")
        mean, lo, hi = (t.num(c) for c in interval("logit_mean"))
        x = common.value_bars(right, mean, lo, hi, colors)
        right.axhline(0, color="black", linewidth=0.8)
        for xi, m, h, low in zip(x, mean, hi, lo, strict=True):
            if not finite(m):
                right.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=9)
                continue
            end = (h if finite(h) else m) if m >= 0 else (low if finite(low) else m)
            right.annotate(
                f"{m:.2f}",
                (xi, end),
                xytext=(0, 3 if m >= 0 else -3),
                textcoords="offset points",
                ha="center",
                va="bottom" if m >= 0 else "top",
                fontsize=9,
            )
        labels = [f"{s}\n(n={fmt_n(k)}, syn. {fmt_pct(y)})" for s, k, y in zip(names, n, syn, strict=True)]
        common.ticks(right, x, labels)
        right.margins(y=0.15)
        if not np.isfinite(mean).any():
            note(right, "no logit values (all NaN)")
    return fig
