"""Figures for the backtracking experiment: one function per PNG, drawn from plain tables.

Every function draws ONE figure, saves it (dpi 150, tight bbox) to ``path``, releases it and returns
the path. Rates and accuracies arrive as fractions in [0, 1] (a column whose values exceed 1 is taken
as already in percent) and are shown in percent on a fixed 0-100 axis. Intervals are drawn as error
bars or shaded bands; titles and tick labels carry the sample sizes and which rows are shown (the
original mixed ablation conditions into "baseline" figures, B14). Empty tables, groups with n=0,
zero events and NaN values never raise: the axes are drawn with a centred note instead of data.

No pyplot: figures are ``matplotlib.figure.Figure`` objects on an explicit Agg canvas, so nothing is
left in a global figure registry and no GUI backend is ever touched.
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.style
import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

STYLE = "seaborn-v0_8-whitegrid"
DPI = 150
BASELINE, TARGETED, RANDOM = "#2ca02c", "#d62728", "#7f7f7f"  # condition / arm roles
BT, CONTROL = "#1f77b4", "#ff7f0e"  # backtracking events vs controls (also with / without BT)
ACCURACY = "#6a3d9a"  # accuracy series where colour encodes the metric, not the group
VARIANT_COLORS = ("#8172b3", "#17becf", "#8c564b", "#e377c2", "#bcbd22", "#9edae5")
NEGATIVE, POSITIVE = "#c0392b", "#b8b8b8"
PCT_TOP = 118.0  # percent axes show ticks 0-100; the headroom above keeps value labels inside the axes
PREVIEW_MAX_BYTES = 150_000
PREVIEW_WIDTH = 600

Frame = pl.DataFrame | Sequence[Mapping[str, Any]] | None


# --------------------------------------------------------------------------------------------- helpers
def _frame(rows: Frame) -> pl.DataFrame:
    if rows is None:
        return pl.DataFrame()
    return rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(list(rows))


def _num(df: pl.DataFrame, *names: str) -> np.ndarray:
    """First existing column of ``names`` as float64 (null / non-numeric -> NaN); all-NaN if none exists."""
    for name in names:
        if name in df.columns:
            s = df[name]
            if s.dtype == pl.Boolean:
                s = s.cast(pl.Float64)
            try:
                s = s.cast(pl.Float64, strict=False)
            except Exception:  # e.g. nested types: treat as missing
                return np.full(df.height, np.nan)
            return s.fill_null(float("nan")).to_numpy().astype(float)
    return np.full(df.height, np.nan)


def _txt(df: pl.DataFrame, *names: str) -> list[str]:
    for name in names:
        if name in df.columns:
            return ["?" if v is None else str(v) for v in df[name].to_list()]
    return [f"#{i + 1}" for i in range(df.height)]


def _finite(x: float | None) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _fmt_n(x: float | None) -> str:
    return f"{int(round(float(x))):,}" if _finite(x) else "?"


def _fmt_pct(x: float) -> str:
    return f"{x:.1f}%" if _finite(x) else "n/a"


def _total(a: np.ndarray) -> int:
    return int(np.nansum(a)) if a.size else 0


def _pct(*arrays: np.ndarray) -> list[np.ndarray]:
    """Fractions -> percent (arrays already in percent, i.e. with a value > 1, are kept)."""
    first = arrays[0]
    already = bool(first.size) and np.isfinite(first).any() and float(np.nanmax(np.abs(first))) > 1.0 + 1e-9
    return [a if already else a * 100.0 for a in arrays]


def _yerr(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
    """Asymmetric error-bar lengths; None when no interval is known."""
    if not (np.isfinite(lo).any() or np.isfinite(hi).any()):
        return None
    down = np.where(np.isfinite(v) & np.isfinite(lo), np.clip(v - lo, 0, None), 0.0)
    up = np.where(np.isfinite(v) & np.isfinite(hi), np.clip(hi - v, 0, None), 0.0)
    return np.vstack([down, up])


def role_color(name: str) -> str:
    """Baseline green, random-control grey, anything else (a targeted ablation) red."""
    s = name.lower()
    if s.startswith("baseline") or s in {"clean", "none"}:
        return BASELINE
    return RANDOM if "random" in s else TARGETED


def _variant_colors(names: Sequence[str]) -> list[str]:
    return [VARIANT_COLORS[i % len(VARIANT_COLORS)] for i in range(len(names))]


@contextlib.contextmanager
def _style() -> Iterator[None]:
    ctx = matplotlib.style.context(STYLE) if STYLE in matplotlib.style.available else contextlib.nullcontext()
    with ctx:
        yield


def _figure(
    nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (10, 6), **kw: Any
) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes.ravel()


def _fit_pct_axes(fig: Figure) -> None:
    """Zoom percent axes whose data stay low (< 60%), e.g. a 3% backtracking rate, so bars and intervals
    are readable: the top becomes 1.35 x the highest bar, interval, line or value label (at least 10%)."""
    for ax in fig.axes:
        if not getattr(ax, "_bt_pct", False):
            continue
        tops = [ax.dataLim.y1] if np.isfinite(ax.dataLim.y1) else []
        tops += [t.get_position()[1] for t in ax.texts if t.get_transform() == ax.transData]
        top = max((float(t) for t in tops if np.isfinite(t)), default=float("nan"))
        if np.isfinite(top) and 0 < top < 60:
            ax.set_ylim(0, max(10.0, 1.35 * top + 2))
            ax.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
        right = ax.dataLim.x1
        if getattr(ax, "_bt_pct_x", False) and np.isfinite(right) and 0 < right < 60:  # a percent x axis
            ax.set_xlim(0, max(10.0, 1.2 * right + 2))
            ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))


def _save(fig: Figure, path: str | Path) -> Path:
    _fit_pct_axes(fig)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, bbox_inches="tight")
    fig.clear()  # Figure objects are not in any pyplot registry; clearing frees the artists now
    return out


def _note(ax: Axes, msg: str, y: float = 0.5, blank_x: bool = False) -> None:
    """A clear centred message on the axes (used instead of, or over, data); ``blank_x`` drops the
    meaningless 0-1 x ticks of a categorical axis that has no categories."""
    if blank_x:
        ax.set_xticks([])
    ax.text(
        0.5,
        y,
        msg,
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=11,
        wrap=True,
        bbox={"boxstyle": "round,pad=0.5", "fc": "white", "ec": "0.6", "alpha": 0.95},
        zorder=10,
    )


def _pct_axis(ax: Axes, label: str) -> None:
    ax._bt_pct = True  # _fit_pct_axes zooms it at save time when the data stay low
    ax.set_ylim(0, PCT_TOP)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel(label)


def _ticks(ax: Axes, x: np.ndarray, labels: Sequence[str]) -> None:
    rotate = len(labels) > 5 or max((len(s.split("\n")[0]) for s in labels), default=0) > 16
    ax.set_xticks(x, labels, rotation=25 if rotate else 0, ha="right" if rotate else "center", fontsize=9)


def _bar_labels(
    ax: Axes, x: np.ndarray, v: np.ndarray, top: np.ndarray, texts: Sequence[str], fontsize: float = 9
) -> None:
    """Labels just above each bar (or its upper interval), capped so they stay inside a percent axis."""
    for xi, vi, ti, s in zip(x, v, top, texts, strict=True):
        base = ti if _finite(ti) else (vi if _finite(vi) else 0.0)
        y = min(max(base, vi if _finite(vi) else 0.0) + 1.5, PCT_TOP - 14)
        ax.text(xi, y, s, ha="center", va="bottom", fontsize=fontsize, clip_on=True)


def _rate_bars(
    ax: Axes,
    names: Sequence[str],
    n: np.ndarray,
    v: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    colors: Sequence[str],
    ylabel: str,
    extra: Sequence[str] | None = None,
    tick_extra: Sequence[str] | None = None,
) -> None:
    """Percent bars with 95% interval error bars and one-decimal value labels (n/a for NaN)."""
    v, lo, hi = _pct(v, lo, hi)
    x = np.arange(len(names))
    ax.bar(
        x,
        np.nan_to_num(v),
        color=list(colors),
        edgecolor="black",
        linewidth=0.6,
        width=0.65,
        yerr=_yerr(v, lo, hi),
        capsize=4,
        error_kw={"elinewidth": 1.1, "ecolor": "0.15"},
    )
    texts = [
        _fmt_pct(vi) + (f"\n{e}" if extra and e else "")
        for vi, e in zip(v, extra or [""] * len(v), strict=True)
    ]
    _bar_labels(ax, x, v, np.where(np.isfinite(hi), np.fmax(hi, v), v), texts, fontsize=8 if extra else 9)
    ticks = [
        f"{s}\n(n={_fmt_n(k)}{', ' + t if tick_extra and t else ''})"
        for s, k, t in zip(names, n, tick_extra or [""] * len(names), strict=True)
    ]
    _ticks(ax, x, ticks)
    ax.set_xlim(-0.6, len(names) - 0.4)
    _pct_axis(ax, ylabel)


def _n_text(n: np.ndarray) -> str:
    """'n=480 per group' when equal, else 'n=410-480 per group'."""
    f = n[np.isfinite(n)]
    if not f.size:
        return "n=0"
    return (
        f"n={_fmt_n(f.min())} per group"
        if f.min() == f.max()
        else f"n={_fmt_n(f.min())}-{_fmt_n(f.max())} per group"
    )


# --------------------------------------------------------------------------------------------- figures
def bt_rate_by_variant(rows: Frame, path: str | Path, *, scope: str = "baseline condition only") -> Path:
    """Strict backtracking rate (%) per prompt variant with Wilson 95% intervals.

    ``rows``: variant, n, bt_count, bt_rate, bt_lo, bt_hi (one row per variant, baseline rows only)."""
    df = _frame(rows)
    names, n = _txt(df, "variant"), _num(df, "n")
    rate, lo, hi = _num(df, "bt_rate"), _num(df, "bt_lo"), _num(df, "bt_hi")
    k = _num(df, "bt_count") if "bt_count" in df.columns else np.round(rate * n)
    total, events = _total(n), _total(k)
    with _style():
        fig, (ax,) = _figure()
        fig.suptitle(f"Backtracking rate by prompt variant — {scope}", fontweight="bold")
        ax.set_title(
            f"n={total:,} completions, {events:,} with backtracking; bars: 95% Wilson intervals", fontsize=10
        )
        ax.set_xlabel("prompt variant (n = completions)")
        if not df.height or total == 0:
            _pct_axis(ax, "completions with backtracking (%)")
            _note(ax, "no completions (n=0)", blank_x=True)
        else:
            _rate_bars(
                ax, names, n, rate, lo, hi, _variant_colors(names), "completions with backtracking (%)"
            )
            if events == 0:
                _note(ax, f"no backtracking events (n=0 of {total:,} completions)", y=0.6)
        return _save(fig, path)


def accuracy_by_bt(
    rows: Frame,
    path: str | Path,
    *,
    lift: float | None = None,
    lift_ci: Sequence[float] | None = None,
    scope: str = "baseline condition only",
) -> Path:
    """Accuracy (%) of completions with vs without backtracking, Wilson 95% intervals, lift in the title.

    ``rows``: group ("with backtracking" / "without backtracking"), n, correct, accuracy, lo, hi
    (``acc_lo`` / ``acc_hi`` are accepted too)."""
    df = _frame(rows)
    names, n = _txt(df, "group"), _num(df, "n")
    acc, lo, hi = _num(df, "accuracy"), _num(df, "lo", "acc_lo"), _num(df, "hi", "acc_hi")
    correct = _num(df, "correct")
    total = _total(n)
    colors = [CONTROL if s.lower().startswith("without") else BT for s in names]
    with _style():
        fig, (ax,) = _figure()
        fig.suptitle(f"Accuracy with vs without backtracking — {scope}", fontweight="bold")
        ax.set_title(
            f"n={total:,} completions; {_lift_text(lift, lift_ci)}; bars: 95% Wilson intervals", fontsize=10
        )
        ax.set_xlabel("completions grouped by strict backtracking (n = completions)")
        label = "accuracy (% correct of all completions in group)"
        if not df.height or total == 0:
            _pct_axis(ax, label)
            _note(ax, "no completions (n=0)", blank_x=True)
        else:
            _rate_bars(
                ax,
                names,
                n,
                acc,
                lo,
                hi,
                colors,
                label,
                tick_extra=[f"{_fmt_n(c)} correct" if _finite(c) else "" for c in correct],
            )
            with_bt = [i for i, s in enumerate(names) if not s.lower().startswith("without")]
            if with_bt and not np.nansum(n[with_bt]):
                _note(ax, f"no backtracking events (n=0 of {total:,} completions)", y=0.6)
        return _save(fig, path)


def _lift_text(lift: float | None, ci: Sequence[float] | None) -> str:
    if not _finite(lift):
        return "lift n/a (a group is empty or has 0% accuracy)"
    ci_txt = (
        f" [{ci[0]:.2f}, {ci[1]:.2f}]"
        if ci is not None and len(ci) == 2 and all(map(_finite, ci))
        else " [CI n/a]"
    )
    return f"lift {float(lift):.2f}x{ci_txt} (95% CI)"


def logit_lens(df: Frame, path: str | Path) -> Path:
    """Mean onset-token logit per layer (logit lens), BT events vs position-matched controls, 95% bands.

    ``df``: layer, mean_target_logit_bt, ci_low_bt, ci_high_bt, n_bt, and the same with ``_control``."""
    d = _frame(df)
    if "layer" in d.columns:
        d = d.sort("layer", nulls_last=True)
    layer = _num(d, "layer")
    ns = {
        k: (int(np.nanmax(a)) if np.isfinite(a).any() else 0)
        for k in ("bt", "control")
        for a in [_num(d, f"n_{k}")]
    }
    with _style():
        fig, (ax,) = _figure()
        fig.suptitle(
            "Logit lens: onset-token logit by layer, backtracking events vs controls", fontweight="bold"
        )
        ax.set_title(
            f"BT events n={ns['bt']:,}, position-matched controls n={ns['control']:,}; "
            "lines: mean, bands: 95% CI",
            fontsize=10,
        )
        ax.set_xlabel("layer (logit lens: residual stream through the final norm and unembedding)")
        ax.set_ylabel("mean logit of the onset token")
        drawn = []
        for kind, color, marker, label in (
            ("bt", BT, "o", "backtracking onset"),
            ("control", CONTROL, "s", "position-matched control"),
        ):
            mean = _num(d, f"mean_target_logit_{kind}")
            if not np.isfinite(mean).any():
                continue
            lo, hi = _num(d, f"ci_low_{kind}"), _num(d, f"ci_high_{kind}")
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
        if not drawn:
            ax.set_xlim(0, max(1, len(layer) - 1))
            _note(ax, f"no backtracking events (n_bt={ns['bt']}, n_control={ns['control']}): nothing to plot")
        else:
            if len(drawn) == 1:
                missing = "backtracking events" if drawn == ["control"] else "controls"
                _note(ax, f"no {missing} (n=0)", y=0.9)
            ax.legend(loc="best", frameon=True)
            if len(layer) <= 40:
                ax.set_xticks(layer[np.isfinite(layer)])
                ax.tick_params(axis="x", labelsize=8)
        return _save(fig, path)


def ablation_importance(
    df: Frame,
    path: str | Path,
    statistic: str = "delta_logit",
    *,
    selected: Mapping[str, Sequence[int]] | None = None,
) -> Path:
    """Per component (attn, mlp): mean change of the onset-token statistic when one layer's output is
    ablated (ablated - clean) with 95% CI; negative bars highlighted, selected layers hatched.

    ``statistic``: ``delta_logit`` or ``delta_logprob`` (columns ``<statistic>_mean/_ci_low/_ci_high``)."""
    d = _frame(df)
    comps = _txt(d, "component") if "component" in d.columns else []
    order = [c for c in ("attn", "mlp") if c in comps or not comps] + sorted(set(comps) - {"attn", "mlp"})
    n_events = _num(d, "n_events")
    n = int(np.nanmax(n_events)) if np.isfinite(n_events).any() else 0
    what = {"delta_logit": "logit", "delta_logprob": "log-prob"}.get(statistic, statistic)
    sel = {
        str(k): {int(x) for x in v if _finite(x)}
        for k, v in (selected or {}).items()
        if isinstance(v, Sequence) and not isinstance(v, str)
    }
    with _style():
        fig, axes = _figure(len(order), 1, figsize=(12, 3.6 * len(order) + 0.6))
        fig.suptitle(
            f"Single-component ablation scan: change in onset-token {what} at the onset position "
            f"(n={n:,} BT events; mean and 95% CI)",
            fontweight="bold",
        )
        for ax, comp in zip(axes, order, strict=True):
            sub = d.filter(pl.col("component") == comp) if comps else d.clear()
            if "layer" in sub.columns:
                sub = sub.sort("layer", nulls_last=True)
            layer, mean = _num(sub, "layer"), _num(sub, f"{statistic}_mean")
            lo, hi = _num(sub, f"{statistic}_ci_low"), _num(sub, f"{statistic}_ci_high")
            chosen = sel.get(comp, set())
            ax.set_title(
                f"{comp}: one bar per ablated layer (n={n:,} events each)"
                + (f"; selected layers {sorted(chosen)}" if chosen else ""),
                fontsize=10,
            )
            ax.set_ylabel(f"Δ onset {what}\n(ablated − clean)")
            ax.axhline(0, color="black", linewidth=0.9)
            if not (np.isfinite(mean) & np.isfinite(layer)).any():
                ax.set_xlim(-0.6, max(len(layer), 1) - 0.4)
                _note(
                    ax,
                    "no backtracking events (n=0): no change to show"
                    if n == 0 or sub.height
                    else f"no rows for component '{comp}'",
                )
                continue
            colors = [NEGATIVE if m < 0 else POSITIVE for m in mean]
            bars = ax.bar(
                layer,
                np.nan_to_num(mean),
                color=colors,
                edgecolor="0.25",
                linewidth=0.5,
                width=0.75,
                yerr=_yerr(mean, lo, hi),
                capsize=2,
                error_kw={"elinewidth": 0.9, "ecolor": "0.2"},
            )
            for b, lay in zip(bars, layer, strict=True):
                if _finite(lay) and int(lay) in chosen:
                    b.set_hatch("///")
                    b.set_edgecolor("black")
                    b.set_linewidth(1.6)
            for lay, m in zip(layer, mean, strict=True):
                if not _finite(m):
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
        return _save(fig, path)


def _two_rate_panels(
    df: pl.DataFrame,
    key: str,
    path: str | Path,
    title: str,
    xlabel: str,
    colors: Callable[[list[str]], list[str]],
) -> Path:
    names, n = _txt(df, key), _num(df, "n")
    total = _total(n)
    k_bt = _num(df, "bt_count") if "bt_count" in df.columns else np.round(_num(df, "bt_rate") * n)
    with _style():
        fig, axes = _figure(1, 2, figsize=(13, 6))
        fig.suptitle(f"{title} (n={total:,} completions)", fontweight="bold")
        for ax, (metric, lo, hi, label) in zip(
            axes,
            (
                ("bt_rate", "bt_lo", "bt_hi", "backtracking rate (%)"),
                ("accuracy", "acc_lo", "acc_hi", "accuracy (%)"),
            ),
            strict=True,
        ):
            ax.set_title(f"{label.split(' (')[0]} per {key}, {_n_text(n)}; 95% Wilson intervals", fontsize=10)
            ax.set_xlabel(xlabel)
            if not df.height or total == 0:
                _pct_axis(ax, label)
                _note(ax, "no completions (n=0)", blank_x=True)
                continue
            _rate_bars(ax, names, n, _num(df, metric), _num(df, lo), _num(df, hi), colors(names), label)
            if metric == "bt_rate" and _total(k_bt) == 0:
                _note(ax, f"no backtracking events (n=0 of {total:,} completions)", y=0.6)
        return _save(fig, path)


def by_condition(rows: Frame, path: str | Path, *, variant: str | None = None) -> Path:
    """BT rate (%) and accuracy (%) per ablation condition (baseline green, targeted red, random grey).

    ``rows``: condition, n, bt_rate, bt_lo, bt_hi, accuracy, acc_lo, acc_hi (any list of conditions)."""
    scope = f"prompt variant {variant}" if variant else "one prompt variant"
    return _two_rate_panels(
        _frame(rows),
        "condition",
        path,
        f"Backtracking rate and accuracy by ablation condition — {scope}",
        "ablation condition (n = completions)",
        lambda ns: [role_color(s) for s in ns],
    )


def formatting_effect(rows: Frame, path: str | Path, *, scope: str = "baseline condition only") -> Path:
    """BT rate (%) and accuracy (%) per prompt-formatting variant.

    ``rows``: variant, n, bt_rate, bt_lo, bt_hi, accuracy, acc_lo, acc_hi (baseline rows only)."""
    return _two_rate_panels(
        _frame(rows),
        "variant",
        path,
        f"Effect of prompt formatting — {scope}",
        "prompt variant (n = completions)",
        _variant_colors,
    )


def phase2_baseline_summary(
    summary: Mapping[str, Any] | None,
    by_variant: Frame,
    path: str | Path,
    *,
    scope: str = "baseline condition only",
) -> Path:
    """2x2: (a) BT rate, accuracy, accuracy with / without BT; (b) accuracy lift with 95% CI;
    (c) BT rate and (d) accuracy per prompt variant. All rows are baseline (no ablation)."""
    s = dict(summary or {})

    def g(key: str) -> float:
        v = s.get(key)
        return float(v) if _finite(v) else float("nan")

    n, bt_rate = g("n"), g("bt_rate")
    n_bt = n * bt_rate if _finite(n) and _finite(bt_rate) else float("nan")
    n_nb = n - n_bt if _finite(n_bt) else float("nan")
    dv = _frame(by_variant)
    with _style():
        fig, axes = _figure(2, 2, figsize=(14, 11))
        fig.suptitle(
            f"Phase-2 baseline summary — {scope} (n={_fmt_n(n) if _finite(n) else 0} completions)",
            fontweight="bold",
        )
        # (a) overall rates
        ax = axes[0]
        ax.set_title("(a) overall rates with 95% Wilson intervals", fontsize=10)
        if not _finite(n) or n == 0:
            _pct_axis(ax, "percent of completions")
            _note(ax, "no completions (n=0)", blank_x=True)
        else:
            keys = [
                ("bt_rate", "bt_lo", "bt_hi"),
                ("accuracy", "acc_lo", "acc_hi"),
                ("acc_with_bt", "acc_with_lo", "acc_with_hi"),
                ("acc_without_bt", "acc_without_lo", "acc_without_hi"),
            ]
            vals = [np.array([g(k[i]) for k in keys]) for i in range(3)]
            _rate_bars(
                ax,
                ["BT rate", "accuracy", "accuracy | BT", "accuracy | no BT"],
                np.array([n, n, n_bt, n_nb]),
                *vals,
                [BT, ACCURACY, BT, CONTROL],
                "percent (%)",
            )
            if n_bt == 0:
                _note(ax, f"no backtracking events (n=0 of {_fmt_n(n)} completions)", y=0.6)
        # (b) lift
        ax = axes[1]
        lift, lo, hi = g("lift"), g("lift_lo"), g("lift_hi")
        ax.set_title("(b) accuracy lift = accuracy with BT / without BT (95% CI)", fontsize=10)
        ax.set_ylabel("accuracy ratio (with BT / without BT)")
        ax.axhline(1.0, color="0.3", linestyle="--", linewidth=1, label="no difference (1.0x)")
        ax.set_xticks([0], [f"with BT (n={_fmt_n(n_bt)}) vs\nwithout BT (n={_fmt_n(n_nb)})"])
        ax.set_xlim(-1, 1)
        if not _finite(lift):
            ax.set_ylim(0, 2)
            _note(ax, "lift undefined: a group is empty or has 0% accuracy")
        else:
            err = _yerr(np.array([lift]), np.array([lo]), np.array([hi]))
            ax.errorbar([0], [lift], yerr=err, fmt="o", color=BT, markersize=9, capsize=8, elinewidth=2)
            ax.annotate(
                _lift_text(lift, (lo, hi)),
                (0, lift),
                xytext=(14, 0),
                textcoords="offset points",
                va="center",
                fontsize=10,
            )
            top = max(v for v in (lift, hi, 1.0) if _finite(v))
            ax.set_ylim(0, top * 1.25 + 0.1)
            ax.legend(loc="lower right", fontsize=8)
        # (c), (d) per variant
        names, nv = _txt(dv, "variant"), _num(dv, "n")
        for ax, (metric, lo_c, hi_c, label, tag) in zip(
            axes[2:],
            (
                ("bt_rate", "bt_lo", "bt_hi", "backtracking rate (%)", "(c)"),
                ("accuracy", "acc_lo", "acc_hi", "accuracy (%)", "(d)"),
            ),
            strict=True,
        ):
            ax.set_title(
                f"{tag} {label.split(' (')[0]} per prompt variant, {_n_text(nv)} ({scope})", fontsize=10
            )
            ax.set_xlabel("prompt variant (n = completions)")
            if not dv.height or _total(nv) == 0:
                _pct_axis(ax, label)
                _note(ax, "no per-variant rows (n=0)", blank_x=True)
            else:
                _rate_bars(
                    ax,
                    names,
                    nv,
                    _num(dv, metric),
                    _num(dv, lo_c),
                    _num(dv, hi_c),
                    _variant_colors(names),
                    label,
                )
        return _save(fig, path)


def subset_sweep(rows: Frame, path: str | Path) -> Path:
    """BT rate (%) and accuracy (%) per ablation arm (baseline first, green) with 95% Wilson intervals,
    dashed baseline line and the paired change vs baseline (percentage points, 95% bootstrap CI).

    ``rows``: arm, n_components, n, bt_rate, bt_lo, bt_hi, accuracy, acc_lo, acc_hi, delta_bt,
    delta_lo, delta_hi (``subset``, ``num_components``, ``delta_bt_lo/hi``, ``delta_acc*`` also read)."""
    df = _frame(rows)
    names, n = _txt(df, "arm", "subset"), _num(df, "n")
    k = _num(df, "n_components", "num_components")
    base_i = names.index("baseline") if "baseline" in names else 0
    total = _total(n)
    ticks_extra = [
        "no ablation" if i == base_i else (f"{int(c)} comp." if _finite(c) else "") for i, c in enumerate(k)
    ]
    panels = (
        (
            "bt_rate",
            "bt_lo",
            "bt_hi",
            "backtracking rate (%)",
            ("delta_bt",),
            ("delta_lo", "delta_bt_lo"),
            ("delta_hi", "delta_bt_hi"),
        ),
        (
            "accuracy",
            "acc_lo",
            "acc_hi",
            "accuracy (%)",
            ("delta_acc",),
            ("delta_acc_lo",),
            ("delta_acc_hi",),
        ),
    )
    with _style():
        fig, axes = _figure(2, 1, figsize=(12, 10), sharex=True)
        fig.suptitle(
            f"Subset sweep: backtracking rate and accuracy per ablated subset "
            f"({_n_text(n).replace('per group', 'completions per arm')}, {total:,} in all)",
            fontweight="bold",
        )
        for ax, (metric, lo, hi, label, dm, dl, dh) in zip(axes, panels, strict=True):
            ax.set_title(
                f"{label.split(' (')[0]} per arm; bars: 95% Wilson CI; Δ = paired change vs "
                "baseline in percentage points [95% bootstrap CI over problems]",
                fontsize=9.5,
            )
            if not df.height or total == 0:
                _pct_axis(ax, label)
                _note(ax, "no completions (n=0)", blank_x=True)
                continue
            v = _num(df, metric)
            dmean, dlo, dhi = (
                _pct(_num(df, *dm), _num(df, *dl), _num(df, *dh))
                if np.isfinite(_num(df, *dm)).any()
                else (np.full(df.height, np.nan),) * 3
            )
            extra = [
                ""
                if i == base_i or not _finite(d)
                else f"Δ{d:+.1f}" + (f" [{a:+.1f}, {b:+.1f}]" if _finite(a) and _finite(b) else "")
                for i, (d, a, b) in enumerate(zip(dmean, dlo, dhi, strict=True))
            ]
            colors = [BASELINE if i == base_i else role_color(s) for i, s in enumerate(names)]
            _rate_bars(
                ax,
                names,
                n,
                v,
                _num(df, lo),
                _num(df, hi),
                colors,
                label,
                extra=extra,
                tick_extra=ticks_extra,
            )
            base_v = _pct(v)[0][base_i]
            if _finite(base_v):
                ax.axhline(
                    base_v,
                    color=BASELINE,
                    linestyle="--",
                    linewidth=1.3,
                    label=f"baseline {_fmt_pct(base_v)}",
                )
                ax.legend(loc="upper right", fontsize=8, frameon=True)
            if metric == "bt_rate" and _total(_num(df, "bt_count")) == 0 and "bt_count" in df.columns:
                _note(ax, f"no backtracking events (n=0 of {total:,} completions)", y=0.6)
        axes[-1].set_xlabel("ablation arm (components scaled to 0 during decoding; n = completions)")
        return _save(fig, path)


def scale_tradeoff(rows: Frame, path: str | Path, *, subset: str | None = None) -> Path:
    """Left: BT rate and accuracy (%) vs ablation scale with 95% bands; right: accuracy vs BT rate,
    one point per scale (coloured and annotated with the scale).

    ``rows``: scale, n, bt_rate, bt_lo, bt_hi, accuracy, acc_lo, acc_hi."""
    df = _frame(rows)
    if "scale" in df.columns:
        df = df.sort("scale", nulls_last=True)
    scale, n = _num(df, "scale"), _num(df, "n")
    bt, bt_lo, bt_hi = _pct(_num(df, "bt_rate"), _num(df, "bt_lo"), _num(df, "bt_hi"))
    acc, acc_lo, acc_hi = _pct(_num(df, "accuracy"), _num(df, "acc_lo"), _num(df, "acc_hi"))
    ok = np.isfinite(scale) & (n > 0)
    what = f"components of {subset}" if subset else "selected components"
    with _style():
        fig, (left, right) = _figure(1, 2, figsize=(14, 6))
        fig.suptitle(
            f"Scale sweep: backtracking rate and accuracy as the {what} are scaled "
            f"({_n_text(n).replace('per group', 'completions per scale')})",
            fontweight="bold",
        )
        left.set_title("rates vs scale (1.0 = no ablation, 0.0 = zeroed); bands: 95% Wilson CI", fontsize=10)
        left.set_xlabel("ablation scale")
        _pct_axis(left, "percent of completions")
        right.set_title(
            "accuracy vs backtracking rate, one point per scale (labels: scale; error bars: 95% CI)",
            fontsize=10,
        )
        right.set_xlabel("backtracking rate (%)")
        right.set_xlim(0, 105)
        right._bt_pct_x = True  # zoomed at save time when the rates stay low (_fit_pct_axes)
        _pct_axis(right, "accuracy (%)")
        if not ok.any():
            for ax in (left, right):
                _note(ax, "no completions (n=0)")
            return _save(fig, path)
        x = scale[ok]
        for v, lo, hi, color, marker, label in (
            (bt, bt_lo, bt_hi, BT, "o", "backtracking rate"),
            (acc, acc_lo, acc_hi, ACCURACY, "s", "accuracy"),
        ):
            left.plot(x, v[ok], color=color, marker=marker, linewidth=1.8, label=label)
            left.fill_between(x, lo[ok], hi[ok], color=color, alpha=0.18, linewidth=0)
        for xi, ni in zip(x, n[ok], strict=True):
            left.annotate(f"n={_fmt_n(ni)}", (xi, 2), ha="center", fontsize=7, color="0.35")
        left.legend(loc="upper right", fontsize=9)
        left.set_xticks(np.unique(x))
        vmin, vmax = float(np.nanmin(x)), float(np.nanmax(x))
        right.errorbar(
            bt[ok],
            acc[ok],
            xerr=_yerr(bt[ok], bt_lo[ok], bt_hi[ok]),
            yerr=_yerr(acc[ok], acc_lo[ok], acc_hi[ok]),
            fmt="none",
            ecolor="0.55",
            elinewidth=0.9,
            capsize=3,
            zorder=1,
        )
        sc = right.scatter(
            np.nan_to_num(bt[ok]),
            np.nan_to_num(acc[ok]),
            c=x,
            cmap="viridis",
            s=70,
            edgecolors="black",
            vmin=vmin,
            vmax=vmax if vmax > vmin else vmin + 1,
            zorder=2,
        )
        for i, (xi, b, a) in enumerate(zip(x, bt[ok], acc[ok], strict=True)):
            if _finite(b) and _finite(a):  # alternate above / below so neighbouring labels do not collide
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
        return _save(fig, path)


def continuation_effect(rows: Frame, path: str | Path) -> Path:
    """Teacher-forced continuation: mean P(onset token) (%) and mean onset logit per ablation scale
    (1.0 = clean), 95% intervals, with the share of events whose new top-1 token is a synonym trigger.

    ``rows``: scale, n, p_onset_mean, p_onset_lo, p_onset_hi, logit_mean, logit_lo, logit_hi,
    synonym_share."""
    df = _frame(rows)
    if "scale" in df.columns:
        df = df.sort("scale", descending=True, nulls_last=True)
    scale, n = _num(df, "scale"), _num(df, "n")
    syn = _pct(_num(df, "synonym_share"))[0]
    names = [("?" if not _finite(s) else f"×{s:g}" + (" (clean)" if s == 1.0 else "")) for s in scale]
    colors = [BASELINE if s == 1.0 else TARGETED for s in scale]
    total = int(np.nanmax(n)) if np.isfinite(n).any() else 0
    with _style():
        fig, (left, right) = _figure(1, 2, figsize=(13, 6))
        fig.suptitle(
            f"Continuation ablation at the onset position: does the onset token survive? "
            f"({_n_text(n).replace('per group', 'events per scale')})",
            fontweight="bold",
        )
        left.set_title("mean P(onset token) per scale; error bars: 95% CI", fontsize=10)
        right.set_title("mean onset-token logit per scale; error bars: 95% CI", fontsize=10)
        left.set_xlabel("ablation scale of the ablated components (n = events)")
        right.set_xlabel(
            "ablation scale (n = events; syn. = share whose top-1 token after ablation\n"
            "is a synonym trigger such as 'Actually')"
        )
        right.set_ylabel("mean logit of the onset token")
        if not df.height or total == 0:
            _pct_axis(left, "P(onset token) (%)")
            for ax in (left, right):
                _note(ax, "no backtracking events (n=0): no continuation measurements", blank_x=True)
            return _save(fig, path)
        _rate_bars(
            left,
            names,
            n,
            _num(df, "p_onset_mean"),
            _num(df, "p_onset_lo"),
            _num(df, "p_onset_hi"),
            colors,
            "P(onset token) (%)",
        )
        mean, lo, hi = _num(df, "logit_mean"), _num(df, "logit_lo"), _num(df, "logit_hi")
        x = np.arange(len(names))
        right.bar(
            x,
            np.nan_to_num(mean),
            color=colors,
            edgecolor="black",
            linewidth=0.6,
            width=0.65,
            yerr=_yerr(mean, lo, hi),
            capsize=4,
            error_kw={"elinewidth": 1.1, "ecolor": "0.15"},
        )
        right.axhline(0, color="black", linewidth=0.8)
        for xi, m, h, low in zip(x, mean, hi, lo, strict=True):
            if _finite(m):
                end = (h if _finite(h) else m) if m >= 0 else (low if _finite(low) else m)
                right.annotate(
                    f"{m:.2f}",
                    (xi, end),
                    xytext=(0, 3 if m >= 0 else -3),
                    textcoords="offset points",
                    ha="center",
                    va="bottom" if m >= 0 else "top",
                    fontsize=9,
                )
            else:
                right.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=9)
        _ticks(
            right,
            x,
            [f"{s}\n(n={_fmt_n(k)}, syn. {_fmt_pct(y)})" for s, k, y in zip(names, n, syn, strict=True)],
        )
        right.set_xlim(-0.6, len(names) - 0.4)
        right.margins(y=0.15)
        if not np.isfinite(mean).any():
            _note(right, "no logit values (all NaN)")
        return _save(fig, path)


# --------------------------------------------------------------------------------------------- preview
def _png_bytes_small(raw: bytes, width: int) -> bytes:
    """Downscale PNG bytes to ``width`` pixels wide (PIL if available, else matplotlib striding)."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(raw)) as im:
            if im.width <= width:
                return raw
            h = max(1, round(im.height * width / im.width))
            small = im.convert("RGBA" if "A" in im.getbands() else "RGB").resize((width, h), Image.LANCZOS)
            buf = io.BytesIO()
            small.save(buf, format="PNG", optimize=True)
            return buf.getvalue()
    except ImportError:
        import matplotlib.image as mpimg

        img = mpimg.imread(io.BytesIO(raw), format="png")
        step = max(1, math.ceil(img.shape[1] / width))
        buf = io.BytesIO()
        mpimg.imsave(buf, img[::step, ::step], format="png")
        return buf.getvalue()


def preview_markdown(
    path: Path, title: str, max_bytes: int = PREVIEW_MAX_BYTES, width: int = PREVIEW_WIDTH
) -> str:
    """Markdown embedding the PNG as a base64 data URI (downscaled to ``width`` px when larger than
    ``max_bytes``), for a Dagster metadata preview. A missing file yields a note, not an error."""
    p = Path(path)
    alt = title.replace("[", "(").replace("]", ")")
    if not p.is_file():
        return f"*figure not found: `{p}`*"
    raw = p.read_bytes()
    if len(raw) > max_bytes:
        raw = _png_bytes_small(raw, width)
    return f"![{alt}](data:image/png;base64,{base64.b64encode(raw).decode('ascii')})"
