"""The bt code location: every asset, check, job and schedule of the profile in ``BT_PROFILE``.

Each module under ``bt_assets/assets`` is one stage with one shape, ``build(profile) -> list`` of asset
and check definitions; the asset groups are the stages: data, generation, events, analysis, phase2,
reports. An imported original run (``phase1.import_dir``) has no completions: its events come from the
original's CSV (``imported``) and only the stages that need no model exist (tables, the figures of
events, ``original_run_report``); ``bt_assets.original_run`` serves it as a second code location.
"""

from __future__ import annotations

import dagster as dg

from bt_assets import schedules
from bt_assets.assets import analysis, data, events, figures, generation, imported, metrics, phase2, reports
from bt_assets.config import Profile, load_profile
from bt_assets.io import PolarsParquetIOManager
from bt_assets.resources import HookedModel

LIVE_STAGES = (data, generation, events, metrics, analysis, phase2, figures, reports)
IMPORT_STAGES = (data, imported, metrics, figures, reports)


def build_definitions(
    profile: Profile, model: HookedModel | None = None, key_prefix: str | None = None
) -> dg.Definitions:
    """All definitions of one profile; ``model`` overrides the profile's model resource (tests);
    ``key_prefix`` namespaces every asset key (a second code location beside the live one)."""
    live = not profile.phase1.import_dir
    stages = LIVE_STAGES if live else IMPORT_STAGES
    defs = [d for stage in stages for d in stage.build(profile)]  # assets and their checks
    if key_prefix:
        keys = {k: k.with_prefix(key_prefix) for d in defs for k in d.keys}
        defs = [d.with_attributes(asset_key_replacements=keys) for d in defs]
    return dg.Definitions(
        assets=defs,
        jobs=schedules.jobs(profile) if live else [],
        schedules=[schedules.sweep_schedule(profile)] if live else [],
        resources={
            "model": model or HookedModel(profile=profile.source),
            "io_manager": PolarsParquetIOManager(base_dir=str(profile.path("storage"))),
        },
        executor=dg.in_process_executor,
    )


profile = load_profile()
defs = build_definitions(profile)
