"""The bt code location: every asset, check, job and schedule of the profile in ``BT_PROFILE``."""

from __future__ import annotations

import dagster as dg

from bt_assets.assets import analysis, common, data, events, phase1
from bt_assets.config import Profile, load_profile
from bt_assets.io import PolarsParquetIOManager


def build_definitions(profile: Profile) -> dg.Definitions:
    if profile.phase1.import_dir:  # an imported original run: no completions, so no model stages
        assets = [*data.build(profile), *events.build(profile)]
    else:
        assets = [*data.build(profile), *phase1.build(profile), *events.build(profile),
                  *analysis.build(profile)]
    main = dg.define_asset_job("bt_main", selection=dg.AssetSelection.all(),
                               executor_def=dg.in_process_executor,
                               description="the whole demo graph, one in-process run, one model load")
    return dg.Definitions(
        assets=assets,
        jobs=[main],
        resources={
            "model": common.model_resource(profile),
            "io_manager": PolarsParquetIOManager(base_dir=str(profile.path("storage"))),
        },
        executor=dg.in_process_executor,
    )


profile = load_profile()
defs = build_definitions(profile)
