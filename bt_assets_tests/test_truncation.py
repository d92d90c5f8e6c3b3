"""Truncation-aware accuracy (issue 13, item 4): ``truncated_share``, ``n_finished``,
``accuracy_finished``, ``mean_tokens`` / ``median_tokens`` per group (``rates.group_rates``) and per sweep
cell (``sweep_stats.cell_stats``), the lift among finished completions, and the opening warning of the
Phase-1 / Phase-2 pages when a condition's or cell's share cut at the token cap exceeds the limit."""

import polars as pl
import pytest

from bt_assets.lib import report_pages as P
from bt_assets.lib.rates import bt_accuracy_summary, finished_summary, group_rates, truncation_row
from bt_assets.lib.stats import Evidence
from bt_assets.lib.sweep_stats import cell_stats, sweep_tables
from bt_assets.lib.sweeps import SweepCell

EV = Evidence(min_events=5, min_problems=2)
COLS = ("has_backtracking_strict", "is_correct")


def _frame(condition: str, finish: list, tokens: list, ok: list, bt: list) -> pl.DataFrame:
    n = len(finish)
    return pl.DataFrame(
        {
            "example_id": [i // 2 for i in range(n)],
            "sample_id": [i % 2 for i in range(n)],
            "condition": [condition] * n,
            "variant": ["v"] * n,
            "has_backtracking_strict": bt,
            "onset_phrase": ["wait" if b else None for b in bt],
            "is_correct": ok,
            "completion_tokens": tokens,
            "finish_reason": finish,
        },
        schema_overrides={"finish_reason": pl.String, "is_correct": pl.Boolean},
    )


# baseline: 3 of 4 at the cap, the one finished completion is correct
BASE = _frame(
    "baseline", ["length", "length", "length", "stop"], [512, 512, 512, 100], [False, True, False, True],
    [True, False, True, False],
)  # fmt: skip
# ablation: 1 of 4 at the cap; 1 of the 3 finished is correct (a null is not correct)
ABL = _frame(
    "targeted_ablation", ["stop", "stop", "length", "stop"], [100, 200, 512, 300], [True, None, True, False],
    [False, True, False, False],
)  # fmt: skip
BOTH = pl.concat([BASE, ABL])


def _picked(row: dict) -> tuple:
    keys = ("truncated_share", "n_finished", "accuracy_finished", "mean_tokens", "median_tokens")
    return tuple(row[k] for k in keys)


def test_group_rates_truncation_columns():
    rows = group_rates(BOTH, "condition", ["baseline", "targeted_ablation"], seed=0).to_dicts()
    assert _picked(rows[0]) == (0.75, 1, 1.0, 409.0, 512.0)
    assert _picked(rows[1]) == (0.25, 3, pytest.approx(1 / 3), 278.0, 250.0)
    # the all-completions accuracy is unchanged: correct / n
    assert (rows[0]["accuracy"], rows[1]["accuracy"]) == (0.5, 0.5)


def test_none_finished_gives_null_accuracy_finished():
    capped = BASE.with_columns(pl.lit("length").alias("finish_reason"))
    assert _picked(truncation_row(capped)) == (1.0, 0, None, 409.0, 512.0)


def test_cell_stats_truncation_columns():
    base = BASE.select("example_id", "sample_id", *COLS)
    st = cell_stats(ABL, base, *COLS, seed=0)
    assert _picked(st) == (0.25, 3, pytest.approx(1 / 3), 278.0, 250.0)
    cells = [
        SweepCell("baseline", "baseline", 1.0, ("subset",)),
        SweepCell("targeted_ablation", "x", 0.0, ("subset",)),
    ]
    out = sweep_tables(BOTH, cells, {}, "seed_compatible", "seed_compatible", 0.5, 0)
    assert _picked(out["baseline"]) == (0.75, 1, 1.0, 409.0, 512.0)
    assert "accuracy_finished" in P.sweep_table(out["subset"])


def test_imported_frames_without_finish_reason_give_null_shares():
    for frame in (
        BOTH.drop("finish_reason"),
        BOTH.with_columns(pl.lit(None, pl.String).alias("finish_reason")),
    ):
        rows = group_rates(frame, "condition", ["baseline", "targeted_ablation"], seed=0).to_dicts()
        assert _picked(rows[0]) == (None, None, None, 409.0, 512.0)
        assert finished_summary(frame, 0) is None
        assert bt_accuracy_summary(frame, 0)["summary"]["finished"] is None
        table = P.rate_table(group_rates(frame, "condition", seed=0), "condition", 0)
        assert "record no finish reason" in table
        assert P.phase1_truncation(frame, {"conditions": ["baseline"], "truncation_warn_share": 0.1}) == ""
        assert "unknown" in P.finished_lift_text(None, EV)


def test_finished_lift_summary_and_text():
    f = finished_summary(BOTH, 0)
    # finished: baseline row 3 (no BT, correct); ablation 0 (no BT, correct), 1 (BT, null), 3 (no BT, wrong)
    assert (f["n"], f["n_finished"], f["n_bt"], f["n_bt_problems"]) == (8, 4, 1, 1)
    assert (f["acc_with_bt"], f["acc_without_bt"], f["lift"]) == (0.0, pytest.approx(2 / 3), 0.0)
    text = P.finished_lift_text(f, EV)
    assert "among finished completions" in text.lower() and "too few finished to test" in text
    assert "with BT 0.0%, without 66.7%" in text


def test_warning_above_threshold_only():
    settings = {"conditions": ["baseline", "targeted_ablation"], "max_new_tokens": 512}
    warn = P.phase1_truncation(BOTH, {**settings, "truncation_warn_share": 0.5})
    assert "Warning: accuracy here measures the token budget: 75.0% of baseline completions" in warn
    assert "max_new_tokens 512" in warn and "targeted_ablation completions" not in warn
    assert P.phase1_truncation(BOTH, {**settings, "truncation_warn_share": 0.75}) == ""  # not above
    assert "targeted_ablation" in P.phase1_truncation(BOTH, {**settings, "truncation_warn_share": 0.2})


def test_phase2_page_opens_with_the_warning(tmp_path):
    cells = [SweepCell("baseline", "baseline", 1.0, ("subset",)), SweepCell("abl", "x", 0.0, ("subset",))]
    events = pl.concat([BASE, ABL.with_columns(pl.lit("abl").alias("condition"))])
    sweep = sweep_tables(events, cells, {}, "seed_compatible", "seed_compatible", 0.5, 0)
    metrics = {"figure_rows": bt_accuracy_summary(BASE, 0)}
    page = P.Page("T", {"model": "m"}, tmp_path, tmp_path, EV)
    empty = pl.DataFrame()

    def text(share: float) -> str:
        settings = {"truncation_warn_share": share, "max_new_tokens": 512}
        return P.phase2_page(page, metrics, sweep, empty, empty, settings, finished_summary(BASE, 0))

    above, below = text(0.5), text(0.9)
    head = above.split("## Conclusions")[0]
    assert "Warning: accuracy here measures the token budget: 75.0% of baseline completions" in head
    assert "Warning" not in below
    assert "Among finished completions (1 of 4" in above
