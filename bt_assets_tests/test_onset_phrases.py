"""Per-cell onset phrases (issue 13, item 10): normalised phrases, counts and shares per sweep cell, in
the sweep table and its figure."""

from __future__ import annotations

import polars as pl
import pytest

from bt_assets.lib import plots
from bt_assets.lib.onset_phrases import normalise_phrase, phrase_summary, phrase_table
from bt_assets.lib.sweep_stats import sweep_tables
from bt_assets.lib.sweeps import SweepCell


@pytest.mark.parametrize(
    ("raw", "phrase"),
    [("**wait**,", "Wait"), ("Wait", "Wait"), ("_Wait_", "Wait"), (" hold  on", "Hold on"),
     ('"Actually', "Actually"), ("", None), (None, None)],
)  # fmt: skip
def test_phrases_are_normalised(raw, phrase):
    assert normalise_phrase(raw) == phrase


def _events(cell: str, phrases: list[str | None]) -> pl.DataFrame:
    n = len(phrases)
    return pl.DataFrame(
        {
            "example_id": list(range(n)),
            "sample_id": [0] * n,
            "condition": [cell] * n,
            "has_backtracking_strict_corrected": [p is not None for p in phrases],
            "onset_phrase_corrected": phrases,
            "is_correct_corrected": [True] * n,
        }
    )


EVENTS = pl.concat(
    [
        _events("base", ["Wait", "wait", "**Wait**", "Actually", None]),
        _events("abl", ["Actually", "actually", "Wait", None, None]),
        _events("none", [None] * 5),
    ]
)


def test_phrase_table_counts_and_shares_per_cell():
    t = phrase_table(EVENTS, ["base", "abl", "none"], "corrected")
    assert t.select("cell", "phrase", "n", "n_bt").rows() == [
        ("base", "Wait", 3, 4),
        ("base", "Actually", 1, 4),
        ("abl", "Actually", 2, 3),
        ("abl", "Wait", 1, 3),
    ]  # a cell without BT has no row; shares sum to 1 per cell
    assert t.group_by("cell").agg(pl.col("share").sum())["share"].to_list() == [1.0, 1.0]
    assert phrase_summary(t, top=1) == {"base": "Wait 3 (75%), +1 more", "abl": "Actually 2 (67%), +1 more"}


def test_sweep_rows_carry_the_phrases_and_the_figure_draws_them():
    cells = [SweepCell("base", "baseline", 1.0, ("subset",)), SweepCell("abl", "x", 0.0, ("subset",))]
    out = sweep_tables(EVENTS, cells, {}, "corrected", "corrected", 0.5, 0)
    assert out["cells"][1]["onset_phrases"] == "Actually 2 (67%), Wait 1 (33%)"
    assert {r["cell"] for r in out["onset_phrases"]} == {"base", "abl"}
    fig = plots.onset_phrases(out["onset_phrases"], cells={"base": 5, "abl": 5})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["base\n(n_bt=4 of 5)", "abl\n(n_bt=3 of 5)"]
    assert len(ax.patches) == 4  # one bar segment per (cell, phrase)


def test_figure_shows_a_cell_without_bt_as_a_measured_zero():
    """No BT completion in any cell (the demo's usual case) is a result: every cell keeps its row with
    its completion count and the "no BT completion" mark; only no cells at all refuses."""
    fig = plots.onset_phrases([], cells={"base": 20, "abl": 20})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["base\n(n_bt=0 of 20)", "abl\n(n_bt=0 of 20)"]
    assert [t.get_text() for t in ax.texts] == ["no BT completion"] * 2
    with pytest.raises(plots.FigureDataError):
        plots.onset_phrases([], cells={})
