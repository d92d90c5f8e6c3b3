"""Which phrase opens each backtracking event, per generation cell (the original's Phase-2 observation
was that ablation turned "Wait" into "Actually": a cell can keep its BT rate while its phrases move).

The phrase is the detector's ``onset_phrase`` (in the profile's detection mode) with markdown, quotes
and trailing punctuation stripped and the casing normalised to the trigger's (``wait`` -> ``Wait``), so
"But wait," and "**Wait**" both count as "Wait". Shares are over the cell's BT completions (one onset
per completion: its earliest marker); completions without BT have no phrase.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import polars as pl

from bt_assets.lib.events import bt_column, onset_column

PHRASE_SCHEMA = {"cell": pl.String, "phrase": pl.String, "n": pl.Int64, "n_bt": pl.Int64, "share": pl.Float64}
_EDGES = re.compile(r"^[\s*_\"'“”‘’`#>(\[-]+|[\s*_\"'“”‘’`)\].,;:!?…—–-]+$")


def normalise_phrase(phrase: str | None) -> str | None:
    """``"**wait**,"`` -> ``"Wait"``; ``"hold  on"`` -> ``"Hold on"``; None/empty -> None."""
    if not phrase:
        return None
    text = " ".join(_EDGES.sub("", _EDGES.sub("", phrase)).split())
    return text[:1].upper() + text[1:].lower() if text else None


def phrase_table(events: pl.DataFrame, cells: Sequence[str], detection_mode: str) -> pl.DataFrame:
    """Per cell (``condition`` column = cell key) and normalised onset phrase: ``n`` BT completions that
    open with it, ``n_bt`` the cell's BT completions, ``share`` = n / n_bt; cells in ``cells`` order,
    phrases by descending count (ties alphabetical). A cell with no BT event has no row."""
    bt, phrase = bt_column(detection_mode), onset_column("onset_phrase", detection_mode)
    rows = events.filter(pl.col(bt).fill_null(False)).select(
        pl.col("condition").alias("cell"),
        pl.col(phrase).map_elements(normalise_phrase, return_dtype=pl.String).fill_null("?").alias("phrase"),
    )
    if rows.height == 0:
        return pl.DataFrame(schema=PHRASE_SCHEMA)
    counts = rows.group_by("cell", "phrase").len("n").with_columns(pl.col("n").cast(pl.Int64))
    totals = counts.group_by("cell").agg(pl.col("n").sum().alias("n_bt"))
    order = {c: i for i, c in enumerate(cells)}
    out = counts.join(totals, on="cell").with_columns(share=pl.col("n") / pl.col("n_bt"))
    out = out.with_columns(pl.col("cell").replace_strict(order, default=len(order)).alias("_o"))
    return (
        out.sort(["_o", "n", "phrase"], descending=[False, True, False])
        .drop("_o")
        .select(list(PHRASE_SCHEMA))
    )


def phrase_summary(table: pl.DataFrame, top: int = 3) -> dict[str, str]:
    """cell -> ``"Wait 12 (60%), Actually 5 (25%), +2 more"``: its ``top`` phrases with counts."""
    out = {}
    for (cell,), g in table.group_by("cell", maintain_order=True):
        parts = [f"{r['phrase']} {r['n']} ({r['share']:.0%})" for r in g.head(top).iter_rows(named=True)]
        rest = g.height - top
        out[str(cell)] = ", ".join(parts) + (f", +{rest} more" if rest > 0 else "")
    return out
