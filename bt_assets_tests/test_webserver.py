"""A real dagster-webserver on a free localhost port: the asset graph and the sweep partitions are
served over GraphQL, and both code locations (the live demo, the re-analysed original run) load."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bt_assets.config import load_profile
from bt_assets.partitions import sweep_key_order
from bt_assets_tests.server import DagsterServer, dagster_home, free_port, serving

pytestmark = pytest.mark.slow

QUERY = """{ assetNodes { assetKey { path } groupName } }"""
LOCATIONS = """{ workspaceOrError { ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename } } } } }"""
PARTS = """{ assetNodeOrError(assetKey: {path: ["sweep_generations"]}) {
  ... on AssetNode { partitionKeys } } }"""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[DagsterServer]:
    tmp = tmp_path_factory.mktemp("webserver")
    server = DagsterServer(free_port(), dagster_home(tmp / "home"), "demo", log=tmp / "webserver.log")
    cmd = ["dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(server.port)]
    with serving(server, cmd, lambda: bool(server.gql(QUERY)["assetNodes"]), timeout=150):
        yield server


def test_asset_graph_served(server):
    nodes = server.gql(QUERY)["assetNodes"]
    keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
    for key in (
        "problems",
        "prompts",
        "phase1_generations",
        "phase1_events",
        "logit_lens",
        "ablation_scan",
        "sweep_generations",
        "sweep_results",
        "continuation_ablation",
        "phase1_report",
        "phase2_report",
    ):
        assert key in keys
    original = {k for k in keys if k.startswith("original_run/")}
    assert {"original_run/phase1_events", "original_run/original_run_report"} <= original
    assert "original_run/logit_lens" not in original  # needs completions: not built from an import
    assert {n["groupName"] for n in nodes} == {
        "data",
        "generation",
        "events",
        "analysis",
        "phase2",
        "reports",
    }


def test_sweep_partitions_listed(server):
    """The served keys are the demo profile's sweep cells, in the order that keeps a stale block
    contiguous (baseline first, then one subset's scales together)."""
    keys = server.gql(PARTS)["assetNodeOrError"]["partitionKeys"]
    assert keys == sweep_key_order(load_profile("demo"))
    assert keys[0] == "subset=baseline,scale=1"
    assert "subset=selected_mlp,scale=1" in keys  # the scale-1 cell that must equal the baseline


def test_both_code_locations_load(server):
    entries = server.gql(LOCATIONS)["workspaceOrError"]["locationEntries"]
    loaded = {e["name"]: e["locationOrLoadError"]["__typename"] for e in entries}
    assert loaded == {"bt_assets": "RepositoryLocation", "bt_original_run": "RepositoryLocation"}
