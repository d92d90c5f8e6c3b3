"""Events stage, tables: the original's files recomputed exactly, and the corrected baseline metrics
(one accuracy denominator, intervals clustered by problem), in live and import mode alike."""

import dagster as dg
import polars as pl

from bt_assets.assets import wiring as w
from bt_assets.config import Profile
from bt_assets.lib import original_tables
from bt_assets.lib.events import analysis_view
from bt_assets.lib.metrics import metrics_corrected as metrics_table


def build(profile: Profile) -> list:
    variants, conditions = profile.variant_names, profile.phase1_conditions
    det, grd, imported = profile.detection.mode, profile.grading.mode, profile.phase1.import_dir is not None

    @dg.asset(**w.cpu_asset("events"))
    def seed_compatible_tables(phase1_events: pl.DataFrame) -> dg.MaterializeResult[dict]:
        """The original's summary_metrics.json, condition_comparison.csv, formatting_summary.csv and
        metrics_v2.json, recomputed exactly as the original did (mixed denominators on purpose), written
        under ``paths.storage/original_format`` with the original's names, keys and float format."""
        ev = phase1_events.select(original_tables.EVENT_COLUMNS)
        files = original_tables.original_files(ev, variants, conditions, profile.phase2_variant)
        paths = original_tables.write_files(files, profile.path("storage") / "original_format")
        tables = {k.split(".")[0]: w.table_md(v) for k, v in files.items() if isinstance(v, pl.DataFrame)}
        meta = {name: dg.MetadataValue.path(str(p)) for name, p in paths.items()} | tables
        value = {k: (v.to_dicts() if isinstance(v, pl.DataFrame) else v) for k, v in files.items()}
        return w.materialized(profile, value, **meta)

    @dg.asset(**w.cpu_asset("events"))
    def metrics_corrected(phase1_events: pl.DataFrame) -> dg.MaterializeResult[dict]:
        """Baseline-only metrics with one accuracy denominator and intervals bootstrapped over problems,
        beside the original's headline; ``figure_rows`` feed the figures and reports."""
        modes = {
            "detection": "seed_compatible (import)" if imported else det,
            "grading": "corrected regrade of stored predictions" if imported else grd,
        }
        view = analysis_view(phase1_events, det, grd, keep=("finish_reason",))  # finished-only accuracy
        seed, evidence = profile.run.seed, profile.analysis.evidence
        out = metrics_table(phase1_events, view, variants, conditions, imported, seed, evidence, modes)
        return w.materialized(profile, out, summary=dg.MetadataValue.json(out))

    return [seed_compatible_tables, metrics_corrected]
