"""The bt code location: every asset (with its code version, ``versions``), check, job and automation
sensor of the profile in ``BT_PROFILE``.

Each module under ``bt_assets/assets`` is one stage with one shape, ``build(profile) -> list`` of asset
and check definitions; the asset groups are the stages: data, generation, events, analysis, phase2,
reports. An imported original run (``phase1.import_dir``) has no completions: its events come from the
original's CSV (``imported``) and only the stages that need no model exist (tables, the figures of
events, ``original_run_report``); ``bt_assets.original_run`` serves it as a second code location.
"""

from __future__ import annotations

import dagster as dg

from bt_assets import schedules, versions
from bt_assets.assets import (
    analysis,
    data,
    events,
    figures,
    generation,
    imported,
    interventions,
    metrics,
    onsets,
    phase2,
    reports,
)
from bt_assets.config import Profile, load_profile
from bt_assets.io import PolarsParquetIOManager
from bt_assets.resources import HookedModel, bound_model

LIVE_STAGES = (data, generation, events, metrics, analysis, phase2, onsets, interventions, figures, reports)
IMPORT_STAGES = (data, imported, metrics, figures, reports)


def build_definitions(
    profile: Profile, model: HookedModel | None = None, key_prefix: str | None = None
) -> dg.Definitions:
    """All definitions of one profile; ``model`` overrides the profile's model resource (tests);
    ``key_prefix`` namespaces every asset key (a second code location beside the live one)."""
    live = not profile.phase1.import_dir
    stages = LIVE_STAGES if live else IMPORT_STAGES
    # assets and their checks, each asset with its code version (profile slice + code, ``versions``)
    defs = [d for stage in stages for d in versions.versioned(profile, stage, stage.build(profile))]
    if live:
        defs = [with_sweep_automation(profile, d) for d in defs]
    if key_prefix:
        keys = {k: k.with_prefix(key_prefix) for d in defs for k in d.keys}
        defs = [d.with_attributes(asset_key_replacements=keys) for d in defs]
    return dg.Definitions(
        assets=defs,
        jobs=schedules.jobs(profile) if live else [],
        sensors=[schedules.sweep_sensor(profile)] if live else [],
        resources={
            "model": model or bound_model(profile),
            "io_manager": PolarsParquetIOManager(base_dir=str(profile.path("storage"))),
        },
        executor=dg.in_process_executor,
    )


def with_sweep_automation(profile: Profile, d: object) -> object:
    """``d`` with the Phase-2 cells' automation condition when it is ``sweep_generations`` or
    ``intervention_generations``."""
    cells = {dg.AssetKey(name) for name in schedules.CELL_ASSETS}
    if not isinstance(d, dg.AssetsDefinition) or not cells & set(d.keys):
        return d
    condition = schedules.sweep_condition(profile)
    return d.map_asset_specs(lambda spec: spec.replace_attributes(automation_condition=condition))


profile = load_profile()
defs = build_definitions(profile)
