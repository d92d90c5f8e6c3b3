"""Shared pieces of the figures: style and colours, strict reading of figure inputs, percent bars with
95% interval error bars, the zoom rule of percent axes, saving a PNG and the Markdown preview.

Conventions of every builder: rates and accuracies arrive as fractions in [0, 1] (a column whose values
exceed 1 is taken as already in percent) and are drawn in percent; an interval of a column ``<name>`` is
``<name>_lo`` / ``<name>_hi`` (naming scheme in ``bt_assets/lib/README.md``) and is drawn as an
asymmetric error bar or band. Inputs are read strictly: no rows, an absent column, a value that cannot
be cast to float, or every plotted value null/NaN raises :class:`FigureDataError` naming the figure and
the columns; a single null/NaN group is drawn as an empty bar labelled "n/a".

No pyplot: figures are ``matplotlib.figure.Figure`` objects on an explicit Agg canvas, so nothing is
left in a global figure registry and no GUI backend is ever touched.
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.style
import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

STYLE = "seaborn-v0_8-whitegrid"
DPI = 150
BASELINE, TARGETED, RANDOM = "#2ca02c", "#d62728", "#7f7f7f"  # condition / subset roles
BT, CONTROL = "#1f77b4", "#ff7f0e"  # backtracking events vs controls (also with / without BT)
ACCURACY = "#6a3d9a"  # accuracy series where colour encodes the metric, not the group
VARIANT_COLORS = ("#8172b3", "#17becf", "#8c564b", "#e377c2", "#bcbd22", "#9edae5")
NEGATIVE, POSITIVE = "#c0392b", "#b8b8b8"
PCT_TOP = 118.0  # percent axes show ticks 0-100; the headroom above keeps value labels inside the axes
ZOOM_BELOW = 60.0  # percent axes whose data, intervals and labels all stay below this are zoomed
PREVIEW_MAX_BYTES = 150_000
PREVIEW_WIDTH = 600
NAN = float("nan")
RATE_PANELS = (("bt_rate", "backtracking rate (%)"), ("accuracy", "accuracy (%)"))  # (column, label)
BAR_STYLE: dict[str, Any] = {"edgecolor": "black", "linewidth": 0.6, "width": 0.65, "capsize": 4}
BAR_STYLE["error_kw"] = {"elinewidth": 1.1, "ecolor": "0.15"}  # percent bars; the ablation scan's are thinner

Frame = pl.DataFrame | Sequence[Mapping[str, Any]] | None


def interval(name: str) -> tuple[str, str, str]:
    """``(name, name_lo, name_hi)``: a column and its 95% interval columns."""
    return name, f"{name}_lo", f"{name}_hi"


# ----------------------------------------------------------------------------------------- reading data
class FigureDataError(ValueError):
    """A figure's input cannot be drawn: no rows, an absent column or key, a value that cannot be cast to
    float, or every plotted value null/NaN. The message names the figure and the column(s)."""


class Table:
    """One figure's input table (build it with :func:`read_table`); numbers are read with a strict float
    cast, null -> NaN."""

    def __init__(self, figure: str, df: pl.DataFrame) -> None:
        self.figure, self.df = figure, df

    @property
    def height(self) -> int:
        return self.df.height

    def num(self, name: str) -> np.ndarray:
        """Column ``name`` as float64; null -> NaN; a value that cannot be cast raises."""
        s = self.df[name]
        try:
            s = s.cast(pl.Float64, strict=True)
        except Exception as e:  # polars: InvalidOperationError, or ComputeError for nested types
            raise FigureDataError(
                f"{self.figure}: column {name} ({s.dtype}) has values that cannot be read as numbers ({e})"
            ) from e
        return s.fill_null(NAN).to_numpy().astype(float)

    def text(self, name: str) -> list[str]:
        return ["?" if v is None else str(v) for v in self.df[name].to_list()]

    def sorted(self, name: str, descending: bool = False) -> Table:
        return Table(self.figure, self.df.sort(name, descending=descending, nulls_last=True))

    def where(self, mask: Sequence[bool]) -> Table:
        return Table(self.figure, self.df.filter(pl.Series(list(mask), dtype=pl.Boolean)))

    def require_values(self, *names: str) -> None:
        """Raise when every value of every column in ``names`` is null/NaN (nothing to draw)."""
        require_values(self.figure, {n: self.num(n) for n in names})


def read_table(figure: str, rows: Frame, columns: Sequence[str], *, allow_empty: bool = False) -> Table:
    """``rows`` (a frame or a list of dict rows) checked: rows present (unless ``allow_empty``; a list of
    no dicts then has no columns either) and every column of ``columns`` present."""
    if rows is None:
        df = pl.DataFrame()
    elif isinstance(rows, pl.DataFrame):
        df = rows
    else:
        try:
            df = pl.DataFrame(list(rows), infer_schema_length=None)
        except Exception as e:  # polars raises several error types for ragged or mixed rows
            raise FigureDataError(f"{figure}: the rows cannot be read as a table ({e})") from e
    if df.height == 0 and not allow_empty:
        raise FigureDataError(f"{figure}: no rows to draw (needs columns {', '.join(columns)})")
    missing = [c for c in columns if c not in df.columns]
    if missing and (df.width or df.height):
        raise FigureDataError(
            f"{figure}: missing column(s) {', '.join(missing)} (the table has {', '.join(df.columns)})"
        )
    return Table(figure, df)


def require_values(figure: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Raise when none of ``arrays`` (column name -> values) holds a finite value."""
    if not any(np.isfinite(a).any() for a in arrays.values()):
        raise FigureDataError(f"{figure}: every value of {', '.join(arrays)} is missing (null/NaN)")


def value(figure: str, mapping: Mapping[str, Any], key: str) -> float:
    """``mapping[key]`` as float (None -> NaN); an absent key or a value that is no number raises."""
    if key not in mapping:
        raise FigureDataError(f"{figure}: missing key {key} (has {', '.join(map(str, mapping))})")
    v = mapping[key]
    if v is None:
        return NAN
    try:
        return float(v)
    except (TypeError, ValueError) as e:
        raise FigureDataError(f"{figure}: {key}={v!r} cannot be read as a number") from e


# ----------------------------------------------------------------------------------------- formatting
def finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def fmt_n(x: float | None) -> str:
    return f"{int(round(float(x))):,}" if finite(x) else "?"


def fmt_pct(x: float) -> str:
    return f"{x:.1f}%" if finite(x) else "n/a"


def total(a: np.ndarray) -> int:
    return int(np.nansum(a)) if a.size else 0


def pct(*arrays: np.ndarray) -> list[np.ndarray]:
    """Fractions -> percent (decided on the first array: one with a value > 1 is kept as percent)."""
    first = arrays[0]
    already = bool(first.size) and np.isfinite(first).any() and float(np.nanmax(np.abs(first))) > 1.0 + 1e-9
    return [a if already else a * 100.0 for a in arrays]


def yerr(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
    """Asymmetric error-bar lengths (0 where an end is unknown); None when no interval is known."""
    if not (np.isfinite(lo).any() or np.isfinite(hi).any()):
        return None
    down = np.where(np.isfinite(v) & np.isfinite(lo), np.clip(v - lo, 0, None), 0.0)
    up = np.where(np.isfinite(v) & np.isfinite(hi), np.clip(hi - v, 0, None), 0.0)
    return np.vstack([down, up])


def n_text(n: np.ndarray) -> str:
    """'n=480 per group' when equal, else 'n=410-480 per group'."""
    f = n[np.isfinite(n)]
    if not f.size:
        return "n=0"
    lo, hi = fmt_n(f.min()), fmt_n(f.max())
    return f"n={lo} per group" if f.min() == f.max() else f"n={lo}-{hi} per group"


def lift_text(lift: float | None, ci: Sequence[float] | None) -> str:
    """'lift 2.06x [1.40, 3.10] (95% CI)'; 'lift n/a (...)' when the lift is undefined."""
    if not finite(lift):
        return "lift n/a (a group is empty or has 0% accuracy)"
    ok = ci is not None and len(ci) == 2 and all(map(finite, ci))
    ci_txt = f" [{float(ci[0]):.2f}, {float(ci[1]):.2f}]" if ok else " [CI n/a]"
    return f"lift {float(lift):.2f}x{ci_txt} (95% CI)"


def role_color(name: str) -> str:
    """Baseline green, random-control grey, anything else (a targeted ablation) red."""
    s = name.lower()
    if s.startswith("baseline") or s in {"clean", "none"}:
        return BASELINE
    return RANDOM if "random" in s else TARGETED


def variant_colors(names: Sequence[str]) -> list[str]:
    return [VARIANT_COLORS[i % len(VARIANT_COLORS)] for i in range(len(names))]


# ----------------------------------------------------------------------------------------- axes
@contextlib.contextmanager
def style() -> Iterator[None]:
    ctx = matplotlib.style.context(STYLE) if STYLE in matplotlib.style.available else contextlib.nullcontext()
    with ctx:
        yield


@contextlib.contextmanager
def new_figure(
    nrows: int = 1,
    ncols: int = 1,
    figsize: tuple[float, float] = (10, 6),
    *,
    suptitle: str,
    titles: Sequence[str] = (),
    xlabels: Sequence[str] = (),
    title_size: float = 10,
    **kw: Any,
) -> Iterator[tuple[Figure, list[Axes]]]:
    """A styled figure on an Agg canvas with a bold ``suptitle``, ``titles`` (size ``title_size``) and
    ``xlabels`` ("": none) on the first axes in order; on leaving it, percent axes get the zoom rule."""
    with style():
        fig = Figure(figsize=figsize, layout="constrained")
        FigureCanvasAgg(fig)
        axes = list(fig.subplots(nrows, ncols, squeeze=False, **kw).ravel())
        fig.suptitle(suptitle, fontweight="bold")
        for ax, title in zip(axes, titles, strict=False):
            ax.set_title(title, fontsize=title_size)
        for ax, xlabel in zip(axes, xlabels, strict=False):
            ax.set_xlabel(xlabel)
        yield fig, axes
        fit_pct_axes(fig)


def fit_pct_axes(fig: Figure) -> None:
    """The zoom rule: a percent axis whose highest bar, interval, line or value label stays below 60%
    (e.g. a 3% backtracking rate) gets the top 1.35 x that value + 2 (at least 10%); otherwise it keeps
    0-100 with headroom (``PCT_TOP``). A percent x axis (scale trade-off) zooms to 1.2 x its data + 2."""
    steps = [1, 2, 2.5, 5, 10]
    for ax in fig.axes:
        if not getattr(ax, "_bt_pct", False):
            continue
        tops = [ax.dataLim.y1] if np.isfinite(ax.dataLim.y1) else []
        tops += [t.get_position()[1] for t in ax.texts if t.get_transform() == ax.transData]
        top = max((float(t) for t in tops if np.isfinite(t)), default=NAN)
        if np.isfinite(top) and 0 < top < ZOOM_BELOW:
            ax.set_ylim(0, max(10.0, 1.35 * top + 2))
            ax.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=steps))
        right = ax.dataLim.x1
        if getattr(ax, "_bt_pct_x", False) and np.isfinite(right) and 0 < right < ZOOM_BELOW:
            ax.set_xlim(0, max(10.0, 1.2 * right + 2))
            ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=steps))


def pct_axis(ax: Axes, label: str, x: bool = False) -> None:
    """A 0-100 percent y axis with headroom (zoomed by ``fit_pct_axes``); ``x`` also marks the x axis."""
    ax._bt_pct = True
    if x:
        ax._bt_pct_x = True
    ax.set_ylim(0, PCT_TOP)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel(label)


def note(ax: Axes, msg: str, y: float = 0.5, blank_x: bool = False) -> None:
    """A clear boxed message in axes coordinates, over the data; ``blank_x`` drops the meaningless 0-1
    x ticks of a categorical axis that has no categories."""
    if blank_x:
        ax.set_xticks([])
    box = {"boxstyle": "round,pad=0.5", "fc": "white", "ec": "0.6", "alpha": 0.95}
    kw = {"ha": "center", "va": "center", "fontsize": 11, "wrap": True, "bbox": box, "zorder": 10}
    ax.text(0.5, y, msg, transform=ax.transAxes, **kw)


def note_no_events(ax: Axes, n: float) -> None:
    note(ax, f"no backtracking events (n=0 of {fmt_n(n)} completions)", y=0.6)


def ticks(ax: Axes, x: np.ndarray, labels: Sequence[str]) -> None:
    """Categorical tick labels, rotated when there are many or long ones."""
    rotate = len(labels) > 5 or max((len(s.split("\n")[0]) for s in labels), default=0) > 16
    ax.set_xticks(x, labels, rotation=25 if rotate else 0, ha="right" if rotate else "center", fontsize=9)


def bar_labels(
    ax: Axes, x: np.ndarray, v: np.ndarray, top: np.ndarray, texts: Sequence[str], fontsize: float = 9
) -> None:
    """Labels just above each bar (or its upper interval), capped so they stay inside a percent axis."""
    for xi, vi, ti, s in zip(x, v, top, texts, strict=True):
        base = ti if finite(ti) else (vi if finite(vi) else 0.0)
        y = min(max(base, vi if finite(vi) else 0.0) + 1.5, PCT_TOP - 14)
        ax.text(xi, y, s, ha="center", va="bottom", fontsize=fontsize, clip_on=True)


def interval_bars(
    ax: Axes, x: np.ndarray, v: np.ndarray, lo: np.ndarray, hi: np.ndarray, colors: Sequence[str], **kw: Any
) -> BarContainer:
    """Bars at ``x`` (NaN drawn as 0) with asymmetric interval error bars ``lo`` / ``hi``; ``kw`` (edgecolor,
    linewidth, width, capsize, error_kw) overrides the black-edged ``BAR_STYLE``; returns the bars."""
    return ax.bar(x, np.nan_to_num(v), color=list(colors), yerr=yerr(v, lo, hi), **(BAR_STYLE | kw))


def value_bars(ax: Axes, v: np.ndarray, lo: np.ndarray, hi: np.ndarray, colors: Sequence[str]) -> np.ndarray:
    """Bars at 0..len-1 (NaN drawn as 0) with black edges and asymmetric interval error bars; returns x."""
    x = np.arange(len(v))
    interval_bars(ax, x, v, lo, hi, colors)
    ax.set_xlim(-0.6, len(v) - 0.4)
    return x


def rate_bars(
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
    """Percent bars (fractions converted) in input order with 95% interval error bars, one-decimal value
    labels ("n/a" for NaN, ``extra`` on a second line) and ticks 'name (n=..., tick_extra)'."""
    v, lo, hi = pct(v, lo, hi)
    x = value_bars(ax, v, lo, hi, colors)
    texts = [fmt_pct(vi) + (f"\n{e}" if e else "") for vi, e in zip(v, extra or [""] * len(v), strict=True)]
    bar_labels(ax, x, v, np.where(np.isfinite(hi), np.fmax(hi, v), v), texts, fontsize=8 if extra else 9)
    labels = [
        f"{s}\n(n={fmt_n(k)}{', ' + t if t else ''})"
        for s, k, t in zip(names, n, tick_extra or [""] * len(names), strict=True)
    ]
    ticks(ax, x, labels)
    pct_axis(ax, ylabel)


def table_rate_bars(
    ax: Axes, t: Table, names: Sequence[str], metric: str, colors: Sequence[str], ylabel: str, **kw: Any
) -> None:
    """``rate_bars`` of column ``metric`` with its ``_lo`` / ``_hi`` interval and the ``n`` column."""
    v, lo, hi = (t.num(c) for c in interval(metric))
    rate_bars(ax, names, t.num("n"), v, lo, hi, colors, ylabel, **kw)


# ----------------------------------------------------------------------------------------- output
def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG (dpi 150, tight bounding box; parent folders created), then clear the
    figure to free its artists, and return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with style():
        fig.savefig(out, dpi=DPI, bbox_inches="tight")
    fig.clear()  # Figure objects are not in any pyplot registry; clearing frees the artists now
    return out


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
