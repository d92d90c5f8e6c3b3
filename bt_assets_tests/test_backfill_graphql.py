"""A backfill of every sweep cell launched through the webserver's GraphQL API, with the mutation the UI
sends (``launchPartitionBackfill``), runs as ONE run: the daemon honours the single-run backfill policy of
``sweep_generations``, so the model loads once for all cells.

The cells' chunk storage is deleted first, so the run really generates every cell (not only reuses
finished chunks)."""

from __future__ import annotations

import shutil
import time

import pytest

from bt_assets_tests.server import DagsterServer, wait_for

pytest_plugins = ["bt_assets_tests.server"]
pytestmark = pytest.mark.slow

ASSET = "sweep_generations"
PARTITION_KEYS = """query($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) {
  ... on AssetNode { partitionKeys } } }"""
# the UI's own mutation (LaunchPartitionBackfill in the webapp), with the fields it asks for
LAUNCH_BACKFILL = """mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message stack }
  } }"""
BACKFILL = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename
  ... on PartitionBackfill {
    status isAssetBackfill numPartitions error { message }
    assetBackfillData { assetBackfillStatuses { ... on AssetPartitionsStatusCounts {
      assetKey { path } numPartitionsTargeted numPartitionsInProgress numPartitionsMaterialized
      numPartitionsFailed } } }
  }
  ... on PythonError { message } } }"""
RUNS_OF_BACKFILL = """query($id: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    ... on Runs { results { runId status assetSelection { path } tags { key value } } } } }"""
RUN_MATERIALIZATIONS = """query($id: ID!) { runOrError(runId: $id) {
  ... on Run { assetMaterializations { assetKey { path } partition } } } }"""
TERMINAL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def test_sweep_backfill_via_graphql_is_one_run(bt_server: DagsterServer):
    keys = bt_server.gql(PARTITION_KEYS, {"path": [ASSET]})["assetNodeOrError"]["partitionKeys"]
    assert len(keys) >= 3, keys
    cells_dir = bt_server.storage / ASSET
    assert cells_dir.is_dir(), "the launch step should have materialized the sweep cells"
    shutil.rmtree(cells_dir)  # force real generation of every cell in the backfill's run
    started = time.time()

    launched = bt_server.gql(
        LAUNCH_BACKFILL,
        {
            "backfillParams": {
                "assetSelection": [{"path": [ASSET]}],
                "partitionNames": keys,
                "fromFailure": False,
                "tags": [],
            }
        },
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def finished() -> dict | None:
        bf = bt_server.gql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        assert bf["__typename"] == "PartitionBackfill", bf
        return bf if bf["status"] in TERMINAL else None

    backfill = wait_for(finished, 420, f"backfill {backfill_id} to finish", interval=3)
    assert backfill["status"] in {"COMPLETED", "COMPLETED_SUCCESS"}, backfill
    assert backfill["isAssetBackfill"] and backfill["numPartitions"] == len(keys)
    (counts,) = backfill["assetBackfillData"]["assetBackfillStatuses"]
    assert counts["assetKey"]["path"] == [ASSET]
    assert counts["numPartitionsTargeted"] == counts["numPartitionsMaterialized"] == len(keys), counts
    assert counts["numPartitionsFailed"] == 0

    # exactly ONE run belongs to the backfill: it succeeded and its partition range spans every cell
    runs = bt_server.gql(RUNS_OF_BACKFILL, {"id": backfill_id})["runsOrError"]["results"]
    assert len(runs) == 1, [r["runId"] for r in runs]
    (run,) = runs
    assert run["status"] == "SUCCESS", run
    assert run["assetSelection"] == [{"path": [ASSET]}]
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["dagster/backfill"] == backfill_id
    assert tags["dagster/asset_partition_range_start"] == keys[0]
    assert tags["dagster/asset_partition_range_end"] == keys[-1]

    # that run materialized every cell, and wrote every cell's chunks again
    mats = bt_server.gql(RUN_MATERIALIZATIONS, {"id": run["runId"]})["runOrError"]["assetMaterializations"]
    assert {m["partition"] for m in mats if m["assetKey"]["path"] == [ASSET]} == set(keys)
    cell_dirs = [d for d in cells_dir.iterdir() if d.is_dir()]
    assert len(cell_dirs) == len(keys), sorted(d.name for d in cell_dirs)
    for d in cell_dirs:
        chunks = list(d.rglob("chunk-*.parquet"))
        assert chunks, f"no chunks written for {d.name}"
        assert all(c.stat().st_mtime >= started - 1 for c in chunks)
