"""A real dagster-webserver on a free localhost port: the asset graph and the sweep partitions are
served over GraphQL, and the code location loads without errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUERY = """{ assetNodes { assetKey { path } groupName } }"""
PARTS = """{ assetNodeOrError(assetKey: {path: ["sweep_generations"]}) {
  ... on AssetNode { partitionKeys } } }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gql(port: int, query: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "BT_PROFILE": "demo"}
    exe = Path(sys.executable).with_name("dagster-webserver")
    proc = subprocess.Popen(
        [str(exe), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 150
    try:
        while time.time() < deadline:
            try:
                if gql(port, QUERY).get("data", {}).get("assetNodes"):
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read())
            time.sleep(2)
        else:
            raise TimeoutError("dagster-webserver did not serve the asset graph in time")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_asset_graph_served(server):
    nodes = gql(server, QUERY)["data"]["assetNodes"]
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
    assert {n["groupName"] for n in nodes} == {"data", "generation", "events", "analysis", "phase2", "reports"}


@pytest.mark.slow
def test_sweep_partitions_listed(server):
    keys = gql(server, PARTS)["data"]["assetNodeOrError"]["partitionKeys"]
    assert keys[0] == "subset=baseline,scale=1"
    assert "subset=selected_mlp,scale=0.5" in keys and "subset=selected_mlp,scale=1" in keys
