"""The bt code location: every asset, check, job and schedule of the profile in ``BT_PROFILE``."""

from __future__ import annotations

import dagster as dg

from bt_assets import schedules
from bt_assets.assets import analysis, common, data, events, figures, phase1, phase2, reports
from bt_assets.config import Profile, load_profile
from bt_assets.io import PolarsParquetIOManager
from bt_assets.resources import HookedModel


def build_definitions(profile: Profile, model: HookedModel | None = None) -> dg.Definitions:
    """All definitions of one profile; ``model`` overrides the profile's model resource (tests)."""
    if profile.phase1.import_dir:  # an imported original run: no completions, so no model stages
        assets = [*data.build(profile), *events.build(profile)]
    else:
        assets = [
            *data.build(profile),
            *phase1.build(profile),
            *events.build(profile),
            *analysis.build(profile),
            *figures.build(profile, 1),
            *reports.build(profile, 1),
            *phase2.build(profile),
            *figures.build(profile, 2),
            *reports.build(profile, 2),
        ]
    full = not profile.phase1.import_dir
    return dg.Definitions(
        assets=assets,
        jobs=schedules.jobs(profile) if full else [],
        schedules=[schedules.sweep_schedule(profile)] if full else [],
        resources={
            "model": model or common.model_resource(profile),
            "io_manager": PolarsParquetIOManager(base_dir=str(profile.path("storage"))),
        },
        executor=dg.in_process_executor,
    )


profile = load_profile()
defs = build_definitions(profile)
