"""Figures: every function writes a sane PNG for normal, empty and NaN-laden inputs; previews embed PNGs."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from bt_assets.lib import plots

NAN = float("nan")
# Same columns as bt_assets.lib.rates.group_rates (not imported: tests of the figures stay standalone).
RATE_SCHEMA = {
    "n": pl.Int64,
    "bt_count": pl.Int64,
    "bt_rate": pl.Float64,
    "bt_lo": pl.Float64,
    "bt_hi": pl.Float64,
    "correct": pl.Int64,
    "accuracy": pl.Float64,
    "acc_lo": pl.Float64,
    "acc_hi": pl.Float64,
}


def wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return NAN, NAN
    p, z = k / n, 1.96
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return c - h, c + h


def rate_rows(key: str, names: list[str], ns: list[int], bts: list[int], oks: list[int]) -> pl.DataFrame:
    rows = []
    for name, n, b, ok in zip(names, ns, bts, oks, strict=True):
        (bl, bh), (al, ah) = wilson(b, n), wilson(ok, n)
        rows.append(
            {
                key: name,
                "n": n,
                "bt_count": b,
                "bt_rate": b / n if n else NAN,
                "bt_lo": bl,
                "bt_hi": bh,
                "correct": ok,
                "accuracy": ok / n if n else NAN,
                "acc_lo": al,
                "acc_hi": ah,
            }
        )
    return pl.DataFrame(rows, schema={key: pl.String, **RATE_SCHEMA})


VARIANTS = ["baseline_think_newline", "think_same_line", "no_think_tags"]
CONDITIONS = ["baseline", "targeted_ablation", "random_ablation"]


def variant_rows() -> pl.DataFrame:
    return rate_rows("variant", VARIANTS, [1200, 1200, 1200], [850, 818, 784], [259, 236, 222])


def condition_rows() -> pl.DataFrame:
    return rate_rows("condition", CONDITIONS, [1200, 1200, 1200], [850, 34, 659], [259, 14, 19])


def accuracy_rows() -> pl.DataFrame:
    r = rate_rows("group", ["with backtracking", "without backtracking"], [850, 350], [850, 0], [221, 38])
    return r.select(
        "group", "n", "correct", "accuracy", pl.col("acc_lo").alias("lo"), pl.col("acc_hi").alias("hi")
    )


def lens_rows(n_layers: int = 28, n: int = 120) -> pl.DataFrame:
    layer = np.arange(n_layers)
    bt = np.linspace(-2, 18, n_layers) + np.sin(layer)
    ctl = np.linspace(-2, 6, n_layers)
    return pl.DataFrame(
        {
            "layer": layer,
            "mean_target_logit_bt": bt,
            "ci_low_bt": bt - 1.2,
            "ci_high_bt": bt + 1.2,
            "n_bt": [n] * n_layers,
            "mean_target_logit_control": ctl,
            "ci_low_control": ctl - 0.8,
            "ci_high_control": ctl + 0.8,
            "n_control": [n] * n_layers,
        }
    )


def scan_rows(n_layers: int = 28, n: int = 120) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for comp in ("attn", "mlp"):
        for layer in range(n_layers):
            m = float(rng.normal(0, 0.6)) - (15.1 if (comp, layer) == ("attn", 0) else 0)
            lp = m * 0.7
            rows.append(
                {
                    "layer": layer,
                    "component": comp,
                    "delta_logit_mean": m,
                    "delta_logit_ci_low": m - 0.3,
                    "delta_logit_ci_high": m + 0.3,
                    "delta_logprob_mean": lp,
                    "delta_logprob_ci_low": lp - 0.2,
                    "delta_logprob_ci_high": lp + 0.2,
                    "n_events": n,
                }
            )
    return pl.DataFrame(rows).sort("delta_logit_mean")  # the asset sorts by effect, not by layer


def summary_dict() -> dict:
    return {
        "n": 480,
        "bt_rate": 0.633,
        "bt_lo": 0.589,
        "bt_hi": 0.675,
        "accuracy": 0.196,
        "acc_lo": 0.163,
        "acc_hi": 0.234,
        "acc_with_bt": 0.25,
        "acc_with_lo": 0.20,
        "acc_with_hi": 0.30,
        "acc_without_bt": 0.121,
        "acc_without_lo": 0.08,
        "acc_without_hi": 0.18,
        "lift": 2.06,
        "lift_lo": 1.4,
        "lift_hi": 3.1,
    }


def subset_rows() -> pl.DataFrame:
    arms = ["baseline", "mlp_late_cluster", "mlp_27_only", "attn_27_only", "attn_no_early", "full_selected"]
    r = rate_rows("arm", arms, [480] * 6, [304, 160, 136, 419, 477, 13], [94, 80, 70, 99, 60, 5])
    base_bt, base_acc = 304 / 480, 94 / 480
    return r.with_columns(
        pl.Series("n_components", [0, 4, 1, 1, 10, 12]),
        pl.when(pl.col("arm") == "baseline")
        .then(None)
        .otherwise(pl.col("bt_rate") - base_bt)
        .alias("delta_bt"),
        pl.when(pl.col("arm") == "baseline")
        .then(None)
        .otherwise(pl.col("accuracy") - base_acc)
        .alias("delta_acc"),
    ).with_columns(
        (pl.col("delta_bt") - 0.04).alias("delta_lo"), (pl.col("delta_bt") + 0.04).alias("delta_hi")
    )


def scale_rows() -> pl.DataFrame:
    scales = [0.0, 0.25, 0.5, 0.75, 0.9]
    r = rate_rows("s", [str(s) for s in scales], [480] * 5, [160, 190, 230, 280, 300], [80, 85, 88, 92, 94])
    return r.with_columns(pl.Series("scale", scales)).drop("s")


def continuation_rows() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "scale": [1.0, 0.9, 0.5, 0.0],
            "n": [150] * 4,
            "p_onset_mean": [0.42, 0.38, 0.21, 0.06],
            "p_onset_lo": [0.37, 0.33, 0.17, 0.04],
            "p_onset_hi": [0.47, 0.43, 0.25, 0.08],
            "logit_mean": [21.0, 20.2, 17.5, -1.5],
            "logit_lo": [20.1, 19.3, 16.6, -2.4],
            "logit_hi": [21.9, 21.1, 18.4, -0.6],
            "synonym_share": [0.0, 0.02, 0.11, 0.32],
        }
    )


def with_nans(df: pl.DataFrame) -> pl.DataFrame:
    """Every other value of every float column set to NaN, and one null."""
    cols = []
    for c in df.columns:
        s = df[c]
        if s.dtype == pl.Float64:
            vals = [NAN if i % 2 else v for i, v in enumerate(s.to_list())]
            if len(vals) > 2:
                vals[2] = None
            s = pl.Series(c, vals, dtype=pl.Float64)
        cols.append(s)
    return pl.DataFrame(cols)


Draw = Callable[[pl.DataFrame, Path], Path]
CASES: dict[str, tuple[Callable[[], pl.DataFrame], Draw]] = {
    "bt_rate_by_variant": (variant_rows, plots.bt_rate_by_variant),
    "accuracy_by_bt": (accuracy_rows, lambda d, p: plots.accuracy_by_bt(d, p, lift=2.06, lift_ci=(1.4, 3.1))),
    "logit_lens": (lens_rows, plots.logit_lens),
    "ablation_importance": (
        scan_rows,
        lambda d, p: plots.ablation_importance(d, p, selected={"attn": [3, 5], "mlp": [27, 26]}),
    ),
    "ablation_importance_logprob": (scan_rows, lambda d, p: plots.ablation_importance(d, p, "delta_logprob")),
    "by_condition": (condition_rows, plots.by_condition),
    "formatting_effect": (variant_rows, plots.formatting_effect),
    "phase2_baseline_summary": (
        variant_rows,
        lambda d, p: plots.phase2_baseline_summary(summary_dict(), d, p),
    ),
    "subset_sweep": (subset_rows, plots.subset_sweep),
    "scale_tradeoff": (scale_rows, plots.scale_tradeoff),
    "continuation_effect": (continuation_rows, plots.continuation_effect),
}


@pytest.fixture
def low_dpi(monkeypatch: pytest.MonkeyPatch) -> None:
    """Edge-case tests only need a PNG that renders: a lower dpi keeps the suite fast."""
    monkeypatch.setattr(plots, "DPI", 50)


def check_png(path: Path) -> tuple[int, int]:
    """A PNG whose pixel size fits a 10x6 .. 14x16 inch figure at the module's dpi."""
    assert path.is_file() and path.stat().st_size > 2_000
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
    assert 4 * plots.DPI <= w <= 20 * plots.DPI and 2.7 * plots.DPI <= h <= 17 * plots.DPI, (w, h)
    return w, h


@pytest.mark.parametrize("name", list(CASES))
def test_figure_with_data(name: str, tmp_path: Path) -> None:
    make, draw = CASES[name]
    out = draw(make(), tmp_path / "sub" / f"{name}.png")
    assert out == tmp_path / "sub" / f"{name}.png"
    w, h = check_png(out)
    assert plots.DPI == 150 and w >= 1_200 and h >= 700  # full resolution for real data


@pytest.mark.parametrize("name", list(CASES))
def test_figure_empty_input(name: str, tmp_path: Path, low_dpi: None) -> None:
    make, draw = CASES[name]
    check_png(draw(make().clear(), tmp_path / f"{name}.png"))


@pytest.mark.parametrize(
    "name",
    [
        "accuracy_by_bt",
        "logit_lens",
        "ablation_importance",
        "subset_sweep",
        "scale_tradeoff",
        "continuation_effect",
    ],
)
def test_figure_no_columns(name: str, tmp_path: Path, low_dpi: None) -> None:
    """Tables built from an empty list of dicts have no columns at all."""
    check_png(CASES[name][1](pl.DataFrame(), tmp_path / f"{name}.png"))


@pytest.mark.parametrize("name", list(CASES))
def test_figure_nan_input(name: str, tmp_path: Path, low_dpi: None) -> None:
    make, draw = CASES[name]
    check_png(draw(with_nans(make()), tmp_path / f"{name}.png"))


def test_zero_events_and_zero_n(tmp_path: Path, low_dpi: None) -> None:
    zero = rate_rows("variant", VARIANTS, [96, 96, 96], [0, 0, 0], [10, 9, 8])
    check_png(plots.bt_rate_by_variant(zero, tmp_path / "a.png"))
    check_png(plots.formatting_effect(zero, tmp_path / "b.png"))
    empty_group = rate_rows("condition", CONDITIONS, [96, 0, 96], [50, 0, 40], [10, 0, 8])
    check_png(plots.by_condition(empty_group, tmp_path / "c.png", variant="baseline_think_newline"))
    no_bt = rate_rows("group", ["with backtracking", "without backtracking"], [0, 288], [0, 0], [0, 40])
    check_png(plots.accuracy_by_bt(no_bt, tmp_path / "d.png", lift=None, lift_ci=(NAN, NAN)))
    lens = lens_rows(n=0).with_columns(pl.lit(NAN).alias("mean_target_logit_bt"))
    check_png(plots.logit_lens(lens, tmp_path / "e.png"))
    scan = scan_rows(n=0).with_columns(pl.lit(NAN).alias("delta_logit_mean"))
    check_png(plots.ablation_importance(scan, tmp_path / "f.png", selected={"attn": [], "mlp": []}))
    check_png(plots.phase2_baseline_summary({}, pl.DataFrame(), tmp_path / "g.png"))
    check_png(
        plots.phase2_baseline_summary(
            {**summary_dict(), "bt_rate": 0.0, "lift": None}, zero, tmp_path / "h.png"
        )
    )
    # The continuation summary of an empty table only has these two columns.
    empty = pl.DataFrame(schema={"scale": pl.Float64, "n": pl.Int64})
    check_png(plots.continuation_effect(empty, tmp_path / "i.png"))


def test_sweep_column_aliases(tmp_path: Path, low_dpi: None) -> None:
    """The sweep tables name these columns subset / num_components / delta_bt_lo (also accepted)."""
    rows = subset_rows().rename(
        {
            "arm": "subset",
            "n_components": "num_components",
            "delta_lo": "delta_bt_lo",
            "delta_hi": "delta_bt_hi",
        }
    )
    check_png(plots.subset_sweep(rows, tmp_path / "s.png"))
    acc = accuracy_rows().rename({"lo": "acc_lo", "hi": "acc_hi"})
    check_png(plots.accuracy_by_bt(acc, tmp_path / "a.png"))


def test_role_colors() -> None:
    assert plots.role_color("baseline") == plots.BASELINE
    assert plots.role_color("targeted_ablation") == plots.TARGETED
    assert plots.role_color("random_ablation_seed7") == plots.RANDOM


def decode_preview(md: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert md.startswith("![") and prefix in md and md.endswith(")")
    return base64.b64decode(md.split(prefix, 1)[1][:-1])


def test_preview_markdown_small(tmp_path: Path) -> None:
    path = plots.bt_rate_by_variant(variant_rows(), tmp_path / "v.png")
    md = plots.preview_markdown(path, "fig [v]")
    assert md.startswith("![fig (v)](")
    raw = decode_preview(md)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    if path.stat().st_size <= plots.PREVIEW_MAX_BYTES:
        assert raw == path.read_bytes()


def test_preview_markdown_downscales(tmp_path: Path) -> None:
    noise = (np.random.default_rng(0).random((900, 1500, 3)) * 255).astype(np.uint8)
    path = tmp_path / "big.png"
    Image.fromarray(noise).save(path)
    assert path.stat().st_size > plots.PREVIEW_MAX_BYTES
    raw = decode_preview(plots.preview_markdown(path, "big"))
    with Image.open(io.BytesIO(raw)) as im:
        assert im.format == "PNG" and im.width == plots.PREVIEW_WIDTH and im.height == 360


def test_preview_markdown_missing_file(tmp_path: Path) -> None:
    assert "not found" in plots.preview_markdown(tmp_path / "nope.png", "x")


@pytest.mark.parametrize(("rate", "zoomed"), [(3.1, True), (45.0, True), (70.8, False)])
def test_percent_axes_zoom_only_when_the_data_stay_low(rate, zoomed):
    """A 3% backtracking rate is not drawn on a 0-118% axis; a 70% rate keeps the full axis."""
    from bt_assets.lib.plots import PCT_TOP, _bar_labels, _figure, _fit_pct_axes, _pct_axis

    fig, (ax,) = _figure(1, 1)
    ax.bar([0], [rate], yerr=[[1.0], [2.0]])
    _bar_labels(ax, np.array([0.0]), np.array([rate]), np.array([rate + 2.0]), [f"{rate}%"])
    _pct_axis(ax, "rate (%)")
    _fit_pct_axes(fig)  # what _save does before writing the PNG
    top = ax.get_ylim()[1]
    if zoomed:
        assert rate + 3.5 < top < PCT_TOP and top == pytest.approx(max(10.0, 1.35 * (rate + 3.5) + 2))
    else:
        assert top == PCT_TOP
