"""Import mode: the events of an original Phase-1 run (``phase1.import_dir``), in place of the live
generation and events stages. There are no completions, so corrected detection is unknown (null) and
the corrected grade re-grades the stored predicted strings."""

import dagster as dg
import polars as pl

from bt_assets.assets import wiring as w
from bt_assets.config import Profile, resolve_path
from bt_assets.lib.events import golds_of, imported_events
from bt_assets.lib.original_tables import read_original_events


def build(profile: Profile) -> list:
    path = resolve_path(profile.phase1.import_dir or ".") / "backtracking_events.csv"

    @dg.asset(**w.cpu_asset("events"))
    def phase1_events(problems: pl.DataFrame) -> dg.MaterializeResult[pl.DataFrame]:
        """Events imported from an original Phase-1 run (backtracking_events.csv, schema-checked)."""
        df = imported_events(read_original_events(path), golds_of(problems))
        return w.materialized(profile, df, source=str(path), rows=df.height)

    return [phase1_events]
