"""Figures: what each builder draws (bar heights and order, interval ends, ticks, titles, notes, zoom),
which inputs raise FigureDataError, save / preview of the PNG."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest
from matplotlib.axes import Axes
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from PIL import Image

from bt_assets.lib import plots
from bt_assets.lib.plots import FigureDataError
from bt_assets.lib.plots.common import BASELINE, BT, CONTROL, NEGATIVE, PCT_TOP, RANDOM, TARGETED

NAN = float("nan")
VARIANTS = ["think_newline", "same_line", "no_tags"]


def ci(name: str, values: list, down: float = 0.02, up: float = 0.03) -> dict[str, list]:
    """A column and asymmetric interval columns (value - down, value + up) so both ends are checkable."""
    lo, hi = ([None if v is None else v + d for v in values] for d in (-down, up))
    return {name: values, f"{name}_lo": lo, f"{name}_hi": hi}


def rate_rows(key: str, names: list[str], bt: list[float], acc: list[float], n: int = 400) -> pl.DataFrame:
    return pl.DataFrame(
        {key: names, "n": [n] * len(names), "bt_count": [round(b * n) for b in bt], **ci("bt_rate", bt)}
        | {"correct": [round(a * n) for a in acc], **ci("accuracy", acc)}
    )


def variants() -> pl.DataFrame:
    return rate_rows("variant", VARIANTS, [0.70, 0.65, 0.80], [0.20, 0.25, 0.15])


def accuracy_rows() -> pl.DataFrame:
    r = rate_rows("group", ["with backtracking", "without backtracking"], [1.0, 0.0], [0.26, 0.12])
    return r.select("group", "n", "correct", "accuracy", "accuracy_lo", "accuracy_hi")


def lens_rows() -> pl.DataFrame:
    """Layers unsorted on purpose: the lens is drawn in layer order."""
    bt, ctl = (
        ci("mean_target_logit_bt", [9.0, 1.0, 4.0], 1, 1),
        ci("mean_target_logit_control", [2.0, 0.5, 1.0]),
    )
    return pl.DataFrame({"layer": [2, 0, 1], **bt, **ctl, "n_bt": [50] * 3, "n_control": [48] * 3})


def scan_rows() -> pl.DataFrame:
    """Sorted by effect, as the asset writes it, not by layer."""
    comp, layer = ["mlp"] * 3 + ["attn"] * 3, [0, 1, 2] * 2
    m = [0.5, -2.0, -0.25, -1.0, 0.75, 0.1]
    cols = ci("delta_logit_mean", m, 0.3, 0.2) | ci("delta_logprob_mean", [x / 2 for x in m], 0.3, 0.2)
    return pl.DataFrame({"component": comp, "layer": layer, **cols, "n_events": [40] * 6}).sort(
        "delta_logit_mean"
    )


def summary() -> dict:
    out: dict = {"n": 400, "lift": 2.08, "lift_lo": 1.4, "lift_hi": 3.1}
    for k, v in {"bt_rate": 0.63, "accuracy": 0.20, "acc_with_bt": 0.25, "acc_without_bt": 0.12}.items():
        out |= {c: x[0] for c, x in ci(k, [v]).items()}
    return out


def subset_rows() -> pl.DataFrame:
    r = rate_rows("subset", ["baseline", "mlp_late", "random_mlp"], [0.64, 0.34, 0.62], [0.20, 0.18, 0.19])
    deltas = ci("delta_bt", [None, -0.30, -0.02], 0.04, 0.04) | ci(
        "delta_acc", [None, -0.02, -0.01], 0.04, 0.04
    )
    return r.with_columns(pl.Series("n_components", [0, 4, 4]), *[pl.Series(k, v) for k, v in deltas.items()])


def scale_rows() -> pl.DataFrame:
    r = rate_rows("s", ["a", "b", "c", "d"], [0.30, 0.10, 0.20, 0.5], [0.20, 0.10, 0.15, 0.9])
    return r.with_columns(pl.Series("scale", [0.75, 0.0, 0.5, 0.25]), pl.Series("n", [400, 400, 400, 0]))


def continuation_rows() -> pl.DataFrame:
    p, lg = ci("p_onset_mean", [0.06, 0.42, 0.21]), ci("logit_mean", [-1.5, 21.0, 17.5], 0.9, 0.9)
    share = {"synonym_share": [0.32, 0.0, 0.11], "onset_top1_share": [0.1, 0.9, 0.5]}
    return pl.DataFrame({"scale": [0.0, 1.0, 0.5], "n": [150] * 3, **p, **lg, **share})


@pytest.fixture
def keep() -> Iterator[Callable[[Figure], Figure]]:
    """Register a figure to be closed after the test."""
    made: list[Figure] = []
    yield lambda fig: made.append(fig) or fig
    for fig in made:
        plt.close(fig)


def bars(ax: Axes) -> list:
    return [b for c in ax.containers if isinstance(c, BarContainer) for b in c]


def heights(ax: Axes) -> list[float]:
    return [b.get_height() for b in bars(ax)]


def err_ends(ax: Axes) -> list[tuple[float, float]]:
    """(low, high) y ends of the error bars of the bar container (from the errorbar line collection)."""
    (c,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    return [(seg[0][1], seg[1][1]) for seg in c.errorbar.lines[2][0].get_segments()]


def ticks(ax: Axes) -> list[str]:
    return [t.get_text().split("\n")[0] for t in ax.get_xticklabels()]


def texts(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.texts]


def pct(xs) -> list[float]:
    return [pytest.approx(100 * x) for x in xs]


def test_bt_rate_by_variant(keep) -> None:
    df = variants()
    (ax,) = keep(plots.bt_rate_by_variant(df, scope="baseline only")).axes
    assert heights(ax) == pct(df["bt_rate"])
    assert err_ends(ax) == [
        (pytest.approx(100 * lo), pytest.approx(100 * hi))
        for lo, hi in zip(df["bt_rate_lo"], df["bt_rate_hi"], strict=True)
    ]
    assert ticks(ax) == VARIANTS and "(n=400)" in ax.get_xticklabels()[0].get_text()
    assert texts(ax) == ["70.0%", "65.0%", "80.0%"]
    assert ax.figure.get_suptitle() == "Backtracking rate by prompt variant — baseline only"
    assert ax.get_title().startswith("n=1,200 completions, 860 with backtracking")
    assert ax.get_ylabel() == "completions with backtracking (%)" and ax.get_ylim() == (0, PCT_TOP)
    (ax,) = keep(plots.bt_rate_by_variant(df.reverse())).axes  # swapping rows swaps the bars
    assert heights(ax) == pct(df["bt_rate"].reverse()) and ticks(ax) == VARIANTS[::-1]


@pytest.mark.parametrize(("rate", "zoomed"), [(0.031, True), (0.45, True), (0.708, False)])
def test_percent_axes_zoom_only_when_everything_stays_below_60(keep, rate: float, zoomed: bool) -> None:
    """A 3% rate is not drawn on a 0-118% axis; the top covers the interval (+3) and its label (+1.5)."""
    (ax,) = keep(plots.bt_rate_by_variant(rate_rows("variant", ["v"], [rate], [0.1]))).axes
    top = 100 * rate + 3 + 1.5
    expected = max(10.0, 1.35 * top + 2) if zoomed else PCT_TOP
    assert ax.get_ylim() == (0, pytest.approx(expected))


def test_accuracy_by_bt(keep) -> None:
    df = accuracy_rows()
    (ax,) = keep(plots.accuracy_by_bt(df, lift=2.08, lift_ci=(1.4, 3.1))).axes
    assert heights(ax) == pct([0.26, 0.12])
    assert [b.get_facecolor() for b in bars(ax)] == [plt.matplotlib.colors.to_rgba(c) for c in (BT, CONTROL)]
    assert ax.get_xticklabels()[0].get_text() == "with backtracking\n(n=400, 104 correct)"
    assert "lift 2.08x [1.40, 3.10] (95% CI)" in ax.get_title()
    assert err_ends(ax)[1] == (pytest.approx(10.0), pytest.approx(15.0))
    (ax,) = keep(plots.accuracy_by_bt(df, lift=None)).axes
    assert "lift n/a" in ax.get_title()


def test_accuracy_by_bt_without_events_draws_a_note(keep) -> None:
    df = accuracy_rows().with_columns(
        n=pl.Series([0, 400]), accuracy=pl.Series([None, 0.12]), correct=pl.Series([0, 48])
    )
    (ax,) = keep(plots.accuracy_by_bt(df)).axes
    assert heights(ax) == [0.0, pytest.approx(12.0)]
    assert texts(ax)[:2] == ["n/a", "12.0%"] and "no backtracking events (n=0 of 400 completions)" in texts(
        ax
    )


def test_logit_lens(keep) -> None:
    (ax,) = keep(plots.logit_lens(lens_rows())).axes
    bt, ctl = ax.lines
    assert list(bt.get_xdata()) == [0, 1, 2] and list(bt.get_ydata()) == [1.0, 4.0, 9.0]
    assert list(ctl.get_ydata()) == [0.5, 1.0, 2.0]
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == 0.0 and band.max() == 10.0  # 95% band of the BT line: mean -1 .. mean +1
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "backtracking onset (n=50)",
        "position-matched control (n=48)",
    ]
    half = lens_rows().with_columns(pl.lit(None, dtype=pl.Float64).alias("mean_target_logit_control"))
    (ax,) = keep(plots.logit_lens(half)).axes
    assert len(ax.lines) == 1 and "no controls (n=0)" in texts(ax)


@pytest.mark.parametrize("statistic", ["delta_logit", "delta_logprob"])
def test_ablation_importance(keep, statistic: str) -> None:
    fig = keep(plots.ablation_importance(scan_rows(), statistic, selected={"attn": [1], "mlp": [1, 2]}))
    attn, mlp = fig.axes[:2]
    f = 1.0 if statistic == "delta_logit" else 0.5
    assert attn.get_title().startswith("attn") and mlp.get_title().startswith("mlp")
    assert heights(attn) == pytest.approx([-1.0 * f, 0.75 * f, 0.1 * f])  # layer order
    assert heights(mlp) == pytest.approx([0.5 * f, -2.0 * f, -0.25 * f])
    assert [b.get_hatch() for b in bars(attn)] == [None, "///", None]
    assert [b.get_hatch() for b in bars(mlp)] == [None, "///", "///"]
    neg = plt.matplotlib.colors.to_rgba(NEGATIVE)
    assert [b.get_facecolor() == neg for b in bars(mlp)] == [False, True, True]
    assert err_ends(attn)[0] == pytest.approx((-1.0 * f - 0.3, -1.0 * f + 0.2))
    assert "selected layers [1, 2]" in mlp.get_title()
    with pytest.raises(ValueError, match="statistic"):
        plots.ablation_importance(scan_rows(), "delta_wait")


@pytest.mark.parametrize(
    ("build", "key", "colors"),
    [
        (plots.by_condition, "condition", [BASELINE, TARGETED, RANDOM]),
        (plots.formatting_effect, "variant", None),
    ],
)
def test_two_rate_panels(keep, build, key: str, colors) -> None:
    names = ["baseline", "targeted_ablation", "random_ablation"] if key == "condition" else VARIANTS
    df = rate_rows(key, names, [0.70, 0.03, 0.55], [0.21, 0.01, 0.02])
    bt, acc = keep(build(df)).axes
    assert heights(bt) == pct(df["bt_rate"]) and heights(acc) == pct(df["accuracy"])
    assert ticks(bt) == names and bt.get_ylabel() == "backtracking rate (%)"
    assert acc.get_ylim()[1] < 60  # accuracy stays low: zoomed; the BT panel keeps 0-100
    assert bt.get_ylim() == (0, PCT_TOP)
    if colors:
        assert [b.get_facecolor() for b in bars(bt)] == [plt.matplotlib.colors.to_rgba(c) for c in colors]
    zero = rate_rows(key, names, [0.0, 0.0, 0.0], [0.2, 0.1, 0.1])
    bt, _ = keep(build(zero)).axes
    assert heights(bt) == [0, 0, 0] and "no backtracking events (n=0 of 1,200 completions)" in texts(bt)


def test_phase2_baseline_summary(keep) -> None:
    a, b, c, d = keep(plots.phase2_baseline_summary(summary(), variants())).axes
    assert heights(a) == pct([0.63, 0.20, 0.25, 0.12])
    assert ticks(a) == ["BT rate", "accuracy", "accuracy | BT", "accuracy | no BT"]
    assert "(n=252)" in a.get_xticklabels()[2].get_text()  # with BT: n * bt_rate completions
    (point,) = [ln for ln in b.lines if ln.get_marker() == "o"]
    assert list(point.get_ydata()) == [2.08]
    assert [t.get_text() for t in b.texts] == ["lift 2.08x [1.40, 3.10] (95% CI)"]
    assert heights(c) == pct(variants()["bt_rate"]) and heights(d) == pct(variants()["accuracy"])
    _, b, c, _ = keep(plots.phase2_baseline_summary({**summary(), "lift": None}, [])).axes
    assert "lift undefined" in texts(b)[0] and texts(c) == ["no per-variant rows (n=0)"]


def test_subset_sweep(keep) -> None:
    df = subset_rows()
    top, bottom = keep(plots.subset_sweep(df)).axes
    assert heights(top) == pct(df["bt_rate"]) and heights(bottom) == pct(df["accuracy"])
    assert [b.get_facecolor() for b in bars(top)][0] == plt.matplotlib.colors.to_rgba(BASELINE)
    assert texts(top)[1] == "34.0%\nΔ-30.0 [-34.0, -26.0]" and texts(top)[0] == "64.0%"
    (base,) = [ln for ln in top.lines if ln.get_linestyle() == "--"]
    assert list(base.get_ydata()) == pytest.approx([64.0, 64.0])
    labels = [t.get_text() for t in bottom.get_xticklabels()]
    assert labels[0] == "baseline\n(n=400, no ablation)" and labels[1] == "mlp_late\n(n=400, 4 comp.)"
    (top,) = keep(plots.subset_sweep(df[[1, 0, 2]])).axes[:1]  # baseline found by name, not position
    assert heights(top)[:2] == pct([0.34, 0.64]) and texts(top)[1] == "64.0%"


def test_scale_tradeoff(keep) -> None:
    left, right = keep(plots.scale_tradeoff(scale_rows(), subset="mlp_late")).axes[:2]
    bt_line, acc_line = left.lines
    assert list(bt_line.get_xdata()) == [0.0, 0.5, 0.75]  # sorted; the n=0 row is left out
    assert list(bt_line.get_ydata()) == pct([0.10, 0.20, 0.30])
    points = right.collections[-1].get_offsets()
    assert points.tolist() == [[pytest.approx(10.0), pytest.approx(10.0)], [20.0, 15.0], [30.0, 20.0]]
    assert [t.get_text() for t in right.texts] == ["×0", "×0.5", "×0.75"]
    assert right.get_xlim() == (0, pytest.approx(1.2 * 33 + 2))  # both percent axes zoomed: x to the
    assert right.get_ylim()[1] < 60  # highest interval end (30% + 3), y by the rule of the bar figures


def test_continuation_effect(keep) -> None:
    left, right = keep(plots.continuation_effect(continuation_rows())).axes
    assert heights(left) == pct([0.42, 0.21, 0.06])  # scale descending, 1.0 (clean) first
    assert heights(right) == pytest.approx([21.0, 17.5, -1.5])
    assert ticks(left) == ["×1 (clean)", "×0.5", "×0"]
    assert err_ends(left)[0] == (pytest.approx(40.0), pytest.approx(45.0))
    assert "syn. 32.0%" in right.get_xticklabels()[2].get_text()
    assert [b.get_facecolor() for b in bars(right)][:2] == [
        plt.matplotlib.colors.to_rgba(c) for c in (BASELINE, TARGETED)
    ]
    no_logit = continuation_rows().with_columns(pl.lit(None, dtype=pl.Float64).alias("logit_mean"))
    _, right = keep(plots.continuation_effect(no_logit)).axes
    assert "no logit values (all NaN)" in texts(right)


def test_partly_missing_values_still_draw(keep) -> None:
    df = variants().with_columns(bt_rate=pl.Series([0.7, None, NAN]))
    (ax,) = keep(plots.bt_rate_by_variant(df)).axes
    assert heights(ax) == [pytest.approx(70.0), 0, 0] and texts(ax)[1:] == ["n/a", "n/a"]


CASES: dict[str, tuple[Callable[[], pl.DataFrame], Callable[[pl.DataFrame], Figure], list[str]]] = {
    "bt_rate_by_variant": (variants, plots.bt_rate_by_variant, ["bt_rate"]),
    "accuracy_by_bt": (accuracy_rows, plots.accuracy_by_bt, ["accuracy"]),
    "logit_lens": (lens_rows, plots.logit_lens, ["mean_target_logit_bt", "mean_target_logit_control"]),
    "ablation_importance": (scan_rows, plots.ablation_importance, ["delta_logit_mean"]),
    "by_condition": (
        lambda: variants().rename({"variant": "condition"}),
        plots.by_condition,
        ["bt_rate", "accuracy"],
    ),
    "formatting_effect": (variants, plots.formatting_effect, ["bt_rate", "accuracy"]),
    "subset_sweep": (subset_rows, plots.subset_sweep, ["bt_rate", "accuracy"]),
    "scale_tradeoff": (scale_rows, plots.scale_tradeoff, ["bt_rate", "accuracy"]),
    "continuation_effect": (continuation_rows, plots.continuation_effect, ["p_onset_mean", "logit_mean"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_unusable_input_raises(name: str) -> None:
    make, build, plotted = CASES[name]
    with pytest.raises(FigureDataError, match=f"{name}: no rows"):
        build(make().clear())
    with pytest.raises(FigureDataError, match=f"{name}: no rows"):
        build([])
    with pytest.raises(FigureDataError, match=f"missing column.* {plotted[0]}_hi"):
        build(make().drop(f"{plotted[0]}_hi"))
    with pytest.raises(FigureDataError, match=f"column {plotted[0]} .*cannot be read as numbers"):
        build(make().with_columns(pl.lit("abc").alias(plotted[0])))
    with pytest.raises(FigureDataError, match=f"{name}: every value of {', '.join(plotted)} is missing"):
        build(make().with_columns(*[pl.lit(NAN).alias(c) for c in plotted]))


def test_old_column_names_are_not_read() -> None:
    with pytest.raises(FigureDataError, match="missing column.* bt_rate_lo, bt_rate_hi"):
        plots.bt_rate_by_variant(variants().rename({"bt_rate_lo": "bt_lo", "bt_rate_hi": "bt_hi"}))
    with pytest.raises(FigureDataError, match="missing column.* subset"):
        plots.subset_sweep(subset_rows().rename({"subset": "arm"}))


def test_summary_raises_for_missing_key_bad_value_or_nothing_to_draw() -> None:
    with pytest.raises(FigureDataError, match="missing key acc_with_bt_lo"):
        plots.phase2_baseline_summary(
            {k: v for k, v in summary().items() if k != "acc_with_bt_lo"}, variants()
        )
    with pytest.raises(FigureDataError, match="lift='x' cannot be read"):
        plots.phase2_baseline_summary({**summary(), "lift": "x"}, variants())
    empty = {k: None for k in summary()}
    with pytest.raises(FigureDataError, match="every value of summary bt_rate"):
        plots.phase2_baseline_summary(empty, [])


def test_save_writes_the_figure(keep, tmp_path) -> None:
    fig = keep(plots.bt_rate_by_variant(variants()))
    w, h = (fig.get_size_inches() * plots.DPI).round()
    out = plots.save(fig, tmp_path / "sub" / "v.png")
    assert plots.DPI == 150  # full resolution for the UI and the report
    assert out == tmp_path / "sub" / "v.png" and not fig.axes  # written, then cleared
    with Image.open(out) as im:
        assert im.format == "PNG" and 0.8 * w <= im.width <= 1.1 * w and 0.8 * h <= im.height <= 1.1 * h
        px = np.asarray(im.convert("L"))
    assert px.min() < 50 and (px < 250).mean() > 0.02  # dark bars and text, not a blank canvas
    md = plots.preview_markdown(out, "fig [v]")
    assert md.startswith("![fig (v)](data:image/png;base64,")
    if out.stat().st_size <= plots.common.PREVIEW_MAX_BYTES:
        assert base64.b64decode(md.split(",", 1)[1][:-1]) == out.read_bytes()


def test_preview_markdown_downscales_and_reports_missing(tmp_path) -> None:
    noise = (np.random.default_rng(0).random((900, 1500, 3)) * 255).astype(np.uint8)
    path = tmp_path / "big.png"
    Image.fromarray(noise).save(path)
    assert path.stat().st_size > plots.common.PREVIEW_MAX_BYTES
    raw = base64.b64decode(plots.preview_markdown(path, "big").split(",", 1)[1][:-1])
    with Image.open(io.BytesIO(raw)) as im:
        assert im.format == "PNG" and im.width == plots.common.PREVIEW_WIDTH and im.height == 360
    assert "not found" in plots.preview_markdown(tmp_path / "nope.png", "x")


def test_role_colors() -> None:
    assert plots.role_color("baseline") == BASELINE
    assert plots.role_color("targeted_ablation") == TARGETED
    assert plots.role_color("random_ablation_seed7") == RANDOM
