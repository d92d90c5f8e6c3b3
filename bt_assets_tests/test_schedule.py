"""The nightly sweep schedule asks for ONE run covering the missing (or stale) sweep cells."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from bt_assets.definitions import build_definitions
from bt_assets.partitions import sweep_partitions
from bt_assets_tests.conftest import tiny_profile, tmp_instance

pytestmark = pytest.mark.slow  # a Dagster instance

KEY = dg.AssetKey("sweep_generations")


def evaluate(defs: dg.Definitions, instance: dg.DagsterInstance):
    schedule = defs.resolve_schedule_def("sweep_fill_schedule")
    with dg.build_schedule_context(instance=instance) as ctx:
        return list(schedule.evaluate_tick(ctx).run_requests or [])


def test_schedule_requests_one_run_for_missing_cells(tmp_path, tiny_dirs):
    profile = tiny_profile(tmp_path, tiny_dirs["qwen2"])
    defs = build_definitions(profile)
    keys = sweep_partitions(profile).get_partition_keys()
    assert defs.resolve_schedule_def("sweep_fill_schedule").default_status == dg.DefaultScheduleStatus.STOPPED
    with tmp_instance(tmp_path) as instance:
        [req] = evaluate(defs, instance)
        assert json.loads(req.tags["bt/missing_cells"]) == keys
        assert (req.tags[ASSET_PARTITION_RANGE_START_TAG], req.tags[ASSET_PARTITION_RANGE_END_TAG]) == (
            keys[0],
            keys[-1],
        )

        # the first two and the last cell are materialized under this profile; one is stale
        for k in (keys[0], keys[1], keys[-1]):
            instance.report_runless_asset_event(
                dg.AssetMaterialization(KEY, partition=k, metadata={"profile_hash": profile.config_hash()})
            )
        instance.report_runless_asset_event(
            dg.AssetMaterialization(KEY, partition=keys[2], metadata={"profile_hash": "an-old-profile"})
        )
        [req] = evaluate(defs, instance)
        missing = json.loads(req.tags["bt/missing_cells"])
        assert missing == keys[2:-1]
        assert req.tags[ASSET_PARTITION_RANGE_START_TAG] == keys[2]
        assert req.tags[ASSET_PARTITION_RANGE_END_TAG] == keys[-2]

        for k in keys:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(KEY, partition=k, metadata={"profile_hash": profile.config_hash()})
            )
        assert evaluate(defs, instance) == []
