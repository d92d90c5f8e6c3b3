"""The intervention frontier (issue 14): every kind on the same axes, paired with the baseline cell,
Pareto-optimal cells, and whether a mechanistic intervention beats the token ban."""

from __future__ import annotations

import polars as pl
import pytest

from bt_assets.lib import frontier, plots
from bt_assets.lib.stats import Evidence

EV = Evidence(min_events=5, min_problems=2)
CELLS = [
    {"key": "base", "intervention": "baseline", "kind": "baseline", "strength": 0.0, "noop": True},
    {"key": "ban", "intervention": "ban_wait", "kind": "token_ban", "strength": float("inf"), "noop": False},
    {"key": "mlp", "intervention": "zero_mlp", "kind": "scale", "strength": 0.0, "noop": False},
    {"key": "noop", "intervention": "zero_mlp", "kind": "scale", "strength": 1.0, "noop": True},
]


def _events(bt: dict[str, list[bool]], ok: dict[str, list[bool]]) -> pl.DataFrame:
    rows = []
    for cell in bt:
        for i, (b, o) in enumerate(zip(bt[cell], ok[cell], strict=True)):
            rows.append(
                {"example_id": i // 2, "sample_id": i % 2, "condition": cell, "has_backtracking_strict": b,
                 "is_correct": o, "completion_tokens": 50 + 10 * b,
                 "finish_reason": "stop" if i % 3 else "length"}
            )  # fmt: skip
    return pl.DataFrame(rows)


N = 40  # 20 problems x 2 samples
BT = {
    "base": [i % 2 == 0 for i in range(N)],
    "ban": [i % 8 == 0 for i in range(N)],
    "mlp": [i % 4 == 0 for i in range(N)],
    "noop": [i % 2 == 0 for i in range(N)],
}
OK = {"base": [i % 3 == 0 for i in range(N)], "ban": [i % 3 == 0 for i in range(N)],
      "mlp": [i % 5 == 0 for i in range(N)], "noop": [i % 3 == 0 for i in range(N)]}  # fmt: skip


def test_table_pairs_every_cell_with_the_baseline_and_marks_the_frontier():
    events = _events(BT, OK)
    t = frontier.frontier_table(events, CELLS, "seed_compatible", "seed_compatible", 0)
    rows = {r["cell"]: r for r in t.iter_rows(named=True)}
    assert rows["ban"]["delta_bt"] == pytest.approx(5 / 40 - 20 / 40)
    assert rows["ban"]["delta_bt_hi"] < 0 and rows["noop"]["delta_bt"] == 0.0
    assert rows["ban"]["pareto"] and not rows["mlp"]["pareto"]  # the ban has less BT and more accuracy
    assert not rows["noop"]["pareto"]  # a no-op cell is the baseline again, not a point of its own
    assert {"delta_acc_finished", "delta_acc_finished_lo", "mean_tokens", "truncated_share"} <= set(t.columns)
    fig = plots.tradeoff_frontier(t)
    assert len(fig.axes) == 2


def test_a_mechanistic_cell_that_does_not_beat_the_ban_is_named_with_its_interval():
    events = _events(BT, OK)
    t = frontier.frontier_table(events, CELLS, "seed_compatible", "seed_compatible", 0)
    vs = frontier.versus_ban(t, events, "seed_compatible", "seed_compatible", 0, EV)
    assert vs["ban"] == "ban" and vs["beats"] == [] and vs["testable"]
    lines = frontier.frontier_findings(t, vs, EV)
    assert lines[0].startswith("Pareto-optimal cells") and "ban (token_ban)" in lines[0]
    assert lines[1].startswith("No mechanistic intervention beats the token ban ban: the closest, mlp")
    thin = frontier.versus_ban(t, events, "seed_compatible", "seed_compatible", 0, Evidence(500, 2))
    assert "too few to test" in frontier.frontier_findings(t, thin, EV)[1]


def test_a_cell_with_fewer_bt_than_the_ban_beats_it():
    bt = {**BT, "mlp": [False] * N, "ban": [i % 3 == 0 for i in range(N)]}
    events = _events(bt, OK | {"mlp": OK["base"]})
    t = frontier.frontier_table(events, CELLS, "seed_compatible", "seed_compatible", 0)
    vs = frontier.versus_ban(t, events, "seed_compatible", "seed_compatible", 0, EV)
    assert vs["beats"] == ["mlp"]
    assert "Mechanistic cells that beat the token ban ban" in frontier.frontier_findings(t, vs, EV)[1]
    assert "Each mechanistic cell minus the token ban ban" in frontier.frontier_section(t, vs)


def test_without_a_ban_there_is_nothing_to_compare():
    events = _events({k: BT[k] for k in ("base", "mlp")}, OK)
    t = frontier.frontier_table(events, [CELLS[0], CELLS[2]], "seed_compatible", "seed_compatible", 0)
    vs = frontier.versus_ban(t, events, "seed_compatible", "seed_compatible", 0, EV)
    assert vs["ban"] is None and "No token-ban cell" in frontier.frontier_findings(t, vs, EV)[1]
