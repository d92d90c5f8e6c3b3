"""One trade-off frontier for every intervention family (scale, mean, heads, steer, token_ban).

Every cell decodes the same prompts and (problem, sample) keys as the baseline cell of the same run
(counter-based sampling), so each cell is PAIRED with the baseline: ``delta_bt`` / ``delta_acc`` are
mean per-pair differences (cell minus baseline) with 95% percentile intervals from a bootstrap over
problems (``sweep_stats.cell_stats``). ``delta_acc_finished`` compares accuracy among finished
completions (the finished sets differ between cells, so it is a difference of two ratios, bootstrapped
over problems, not a paired mean). A cell is Pareto-optimal when no other cell has a lower-or-equal BT
rate AND a higher-or-equal accuracy with one of them strict (point estimates; intervals are shown
beside). The token ban is the baseline any mechanistic intervention must beat: a mechanistic cell beats
the best ban cell when its paired BT change against that cell is a reduction shown by its interval and
its paired accuracy change against it is not a loss shown by its interval, read with the evidence floor.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from bt_assets.lib.events import bt_column, correct_column
from bt_assets.lib.report import interval, md_table, paired_text, pct, points
from bt_assets.lib.stats import (
    N_BOOT,
    Evidence,
    accuracy_difference,
    accuracy_split_intervals,
    bootstrap_note,
)
from bt_assets.lib.sweep_stats import cell_stats, paired_deltas

MECHANISTIC = ("scale", "mean", "heads", "steer")


def _finished_diff(rows: pl.DataFrame, base: pl.DataFrame, ok: str, seed: int) -> tuple[float, float, float]:
    """Accuracy among finished completions, cell minus baseline, with its bootstrap-over-problems interval."""
    both = pl.concat(
        [
            rows.select("example_id", ok, "finish_reason").with_columns(pl.lit(True).alias("_cell")),
            base.select("example_id", ok, "finish_reason").with_columns(pl.lit(False).alias("_cell")),
        ]
    ).filter(pl.col("finish_reason") == "stop")
    if both.height == 0:
        return float("nan"), float("nan"), float("nan")
    cell = both["_cell"].to_numpy()
    hit = both[ok].fill_null(False).cast(pl.Float64).to_numpy()
    # the "with" side is the cell, the "without" side the baseline: accuracy cell minus baseline
    lo, hi = accuracy_split_intervals(both["example_id"].to_numpy(), cell, hit, seed=seed)["difference"]
    return accuracy_difference(cell, hit), lo, hi


def frontier_table(
    events: pl.DataFrame, cells: Sequence[dict], detection_mode: str, grading_mode: str, seed: int
) -> pl.DataFrame:
    """One row per cell (``cells``: dicts with ``key``, ``intervention``, ``kind``, ``strength``,
    ``noop``; the baseline cell has kind ``baseline``): the ``cell_stats`` columns against the baseline
    cell (rates, truncation, paired ``delta_bt``/``delta_acc`` with ``_lo/_hi``, ``bt_pairs``),
    ``delta_acc_finished`` with ``_lo/_hi``, and ``pareto``."""
    bt, ok = bt_column(detection_mode), correct_column(grading_mode)
    base_key = next(c["key"] for c in cells if c["kind"] == "baseline")
    base_rows = events.filter(pl.col("condition") == base_key)
    base = base_rows.select("example_id", "sample_id", bt, ok)
    rows = []
    for c in cells:
        mine = events.filter(pl.col("condition") == c["key"])
        fin = _finished_diff(mine, base_rows, ok, seed)
        rows.append(
            {
                "cell": c["key"],
                "intervention": c["intervention"],
                "kind": c["kind"],
                "strength": float(c["strength"]),
                "noop": bool(c["noop"]),
                **cell_stats(mine, base, bt, ok, seed),
                "delta_acc_finished": fin[0],
                "delta_acc_finished_lo": fin[1],
                "delta_acc_finished_hi": fin[2],
            }
        )
    df = pl.DataFrame(rows, infer_schema_length=None)
    return df.with_columns(pl.Series("pareto", pareto_mask(df), pl.Boolean))


def pareto_mask(df: pl.DataFrame) -> list[bool]:
    """Cells (not no-op, with completions) that no other such cell dominates on (BT rate lower,
    accuracy higher); the baseline takes part as one point."""
    live = [
        (i, r["bt_rate"], r["accuracy"])
        for i, r in enumerate(df.iter_rows(named=True))
        if r["n"] and (not r["noop"] or r["kind"] == "baseline")
    ]
    out = [False] * df.height
    for i, b, a in live:
        dominated = any((b2 <= b and a2 >= a) and (b2 < b or a2 > a) for j, b2, a2 in live if j != i)
        out[i] = not dominated
    return out


def paired_against(
    events: pl.DataFrame, cell: str, other: str, detection_mode: str, grading_mode: str, seed: int
) -> dict:
    """``cell`` minus ``other`` on the same (problem, sample) pairs: BT and accuracy changes with 95%
    bootstrap-over-problems intervals, and the pairs (and their problems) where either side backtracks."""
    bt, ok = bt_column(detection_mode), correct_column(grading_mode)
    a, b = (events.filter(pl.col("condition") == c) for c in (cell, other))
    return paired_deltas(a, b, bt, ok, seed)


def versus_ban(
    table: pl.DataFrame,
    events: pl.DataFrame,
    detection_mode: str,
    grading_mode: str,
    seed: int,
    evidence: Evidence,
) -> dict:
    """Every mechanistic (non-no-op) cell against the best token-ban cell (the ban cell with the lowest
    BT rate): ``ban`` its key, ``rows`` the ``paired_against`` numbers of each, ``beats`` the cells that
    beat it (module docstring), ``testable`` whether any comparison clears the evidence floor."""
    bans = table.filter((pl.col("kind") == "token_ban") & ~pl.col("noop") & (pl.col("n") > 0))
    mech = table.filter(pl.col("kind").is_in(MECHANISTIC) & ~pl.col("noop") & (pl.col("n") > 0))
    out: dict = {
        "ban": None,
        "rows": [],
        "beats": [],
        "testable": False,
        "interval_method": bootstrap_note(N_BOOT, seed),
    }
    if bans.height == 0 or mech.height == 0:
        return out
    ban = bans.sort("bt_rate", "cell")["cell"][0]
    out["ban"] = ban
    for cell in mech["cell"]:
        r = {"cell": cell, **paired_against(events, cell, ban, detection_mode, grading_mode, seed)}
        testable = evidence.enough(r["bt_pairs"], r["bt_pair_problems"])
        fewer_bt = (
            testable
            and evidence.excludes(
                r["delta_bt_lo"], r["delta_bt_hi"], 0.0, r["bt_pairs"], r["bt_pair_problems"]
            )
            and r["delta_bt_hi"] < 0
        )
        acc_loss = r["delta_acc_hi"] < 0 and r["delta_acc_lo"] != r["delta_acc_hi"]
        r["testable"], r["beats"] = testable, bool(fewer_bt and not acc_loss)
        out["testable"] |= testable
        out["rows"].append(r)
        if r["beats"]:
            out["beats"].append(cell)
    return out


def _cell_text(r: dict, evidence: Evidence) -> str:
    return (
        f"{r['cell']} ({r['kind']}): BT {pct(r['bt_rate'])}{interval(r['bt_rate_lo'], r['bt_rate_hi'])}, "
        f"accuracy {pct(r['accuracy'])}{interval(r['accuracy_lo'], r['accuracy_hi'])}, "
        f"{r['mean_tokens']:.0f} tokens on average; BT vs baseline: {paired_text(r, evidence)}"
    )


def frontier_findings(table: pl.DataFrame, vs_ban: dict, evidence: Evidence) -> list[str]:
    """The Pareto-optimal cells with their intervals, and whether a mechanistic intervention beats the
    token ban (or that the evidence is too thin, or that the comparison is absent)."""
    if table.height == 0:
        return ["No intervention cells."]
    pareto = [r for r in table.iter_rows(named=True) if r["pareto"]]
    out = [
        "Pareto-optimal cells (BT rate vs accuracy, point estimates; no other cell has both a lower-or-equal "
        "BT rate and a higher-or-equal accuracy): " + "; ".join(_cell_text(r, evidence) for r in pareto) + "."
    ]
    ban = vs_ban.get("ban")
    if ban is None:
        out.append("No token-ban cell and mechanistic cell to compare.")
    elif vs_ban["beats"]:
        rows = [r for r in vs_ban["rows"] if r["beats"]]
        parts = [
            f"{r['cell']} (BT {points(r['delta_bt'], r['delta_bt_lo'], r['delta_bt_hi'])}, accuracy "
            f"{points(r['delta_acc'], r['delta_acc_lo'], r['delta_acc_hi'])} vs the ban, "
            f"{r['bt_pairs']} pairs with a BT event from {r['bt_pair_problems']} problems)"
            for r in rows
        ]
        out.append(
            f"Mechanistic cells that beat the token ban {ban} (paired, same prompts and keys): "
            + "; ".join(parts)
            + "."
        )
    elif not vs_ban["testable"]:
        most = max(vs_ban["rows"], key=lambda r: r["bt_pairs"])
        out.append(
            f"Whether any mechanistic intervention beats the token ban {ban} is too few to test: the "
            f"best-supported comparison ({most['cell']}) has {most['bt_pairs']} pairs with a BT event from "
            f"{most['bt_pair_problems']} problems."
        )
    else:
        best = min(vs_ban["rows"], key=lambda r: r["delta_bt"])
        out.append(
            f"No mechanistic intervention beats the token ban {ban}: the closest, {best['cell']}, changes "
            f"BT by {points(best['delta_bt'], best['delta_bt_lo'], best['delta_bt_hi'])} against it "
            f"({best['bt_pairs']} pairs with a BT event from {best['bt_pair_problems']} problems)."
        )
    return out


FRONTIER_COLUMNS = [
    "cell",
    "kind",
    "strength",
    "n",
    "bt_rate",
    "accuracy",
    "delta_bt",
    "delta_bt_lo",
    "delta_bt_hi",
    "delta_acc",
    "delta_acc_finished",
    "mean_tokens",
    "truncated_share",
    "pareto",
]
FRONTIER_FIGURES = [("Intervention trade-off frontier", "tradeoff_frontier")]


def frontier_section(table: pl.DataFrame, vs_ban: dict) -> str:
    """The frontier table (every cell, percent rates, paired changes vs the baseline cell with 95%
    intervals) and the comparison of each mechanistic cell with the best token-ban cell."""
    if table.height == 0:
        return "\n## Intervention frontier\n\nnone"
    fmt = {c: "pct" for c in ("bt_rate", "accuracy", "truncated_share")}
    fmt |= {c: "f2" for c in FRONTIER_COLUMNS if c.startswith("delta_") or c == "mean_tokens"}
    text = f"\n## Intervention frontier\n\n{md_table(table.select(FRONTIER_COLUMNS), fmt)}\n"
    if vs_ban.get("rows"):
        rows = pl.DataFrame(vs_ban["rows"]).select(
            "cell", "n_pairs", "delta_bt", "delta_bt_lo", "delta_bt_hi", "delta_acc", "delta_acc_lo",
            "delta_acc_hi", "bt_pairs", "bt_pair_problems", "testable", "beats",
        )  # fmt: skip
        deltas = {c: "f2" for c in rows.columns if c.startswith("delta_")}
        head = f"Each mechanistic cell minus the token ban {vs_ban['ban']} (paired)"
        text += f"\n{head}:\n\n{md_table(rows, deltas)}\n"
    note = "Paired changes are cell minus baseline over the same (problem, sample) pairs"
    return f"{text}\n{note}; {vs_ban['interval_method']}."
