"""A real ``dagster dev`` (webserver + daemon) over a throwaway instance that already holds the whole graph
of a tiny profile (``write_profile`` over a random Qwen2 checkpoint biased to say "Wait" + the demo
tokenizer; outputs under a temp dir).

Test modules load it with ``pytest_plugins = ["bt_assets_tests.server"]``: the fixtures are session-scoped,
so materializing the graph (``python -m bt_assets.launch``, 65-100 s on 2 cores) and starting the
server (~15 s) happen once per pytest run, whichever server tests are selected. At the end the whole process
group of ``dagster dev`` (webserver, daemon, code servers, runs) is stopped; nothing is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bt_assets_tests.conftest import EOS_ID, WAIT_IDS, write_profile

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_TIMEOUT_S = 900
START_TIMEOUT_S = 240
ASSET_NODES = "{ assetNodes { assetKey { path } } }"
DAEMONS = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"
# the daemons the server tests rely on: backfills, and the run queue (every UI launch is queued)
NEEDED_DAEMONS = {"BACKFILL", "QUEUED_RUN_COORDINATOR"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 2.0) -> Any:
    """Poll ``check`` until it returns something truthy; ``TimeoutError`` naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class DagsterServer:
    port: int
    home: Path  # DAGSTER_HOME
    profile: Path  # BT_PROFILE
    outputs: Path  # the profile's storage/, figures/, reports/ live here
    log: Path  # dagster dev's stdout + stderr

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage(self) -> Path:
        return self.outputs / "storage"

    def gql(self, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
        """The ``data`` of a GraphQL answer; any GraphQL error fails with the message."""
        req = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer = json.loads(resp.read())
        if answer.get("errors"):
            raise AssertionError(f"GraphQL errors: {json.dumps(answer['errors'], indent=1)}")
        return answer["data"]


# Exec'd in front of ``dagster dev``: default SIGINT/SIGTERM. A shell that starts pytest in the background
# leaves both ignored, and ``dagster dev`` maps SIGTERM to SIGINT's handler, so it could not be stopped
# gracefully otherwise. (A preexec_fn would do the same but is unsafe in a process with threads.)
DEFAULT_SIGNALS_EXEC = (
    "import os, signal, sys; "
    "[signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGTERM)]; "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def _stop(proc: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM to ``dagster dev`` (it shuts its webserver and daemon down over their shutdown pipes),
    then SIGKILL to whatever is left in its process group (code servers, a run still going)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until the group is gone (killed children are reaped by init)
        try:
            os.killpg(proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.2)


def backtracking_checkpoint(src: Path, dst: Path) -> Path:
    """A copy of a tiny random Qwen2 checkpoint that says "Wait", so the figures have events to draw.

    Qwen2's lm_head has no bias, so one is built in: residual dimension 0 holds a constant that the
    embedding writes and no attention/MLP output touches, so after the final RMSNorm it is about
    sqrt(hidden_size) at every position and lm_head's column 0 acts as a logit bias (+6.5 for the "Wait"
    tokens, +4 for EOS). About 40% of 10-token completions then contain a "Wait"."""
    import torch
    from transformers import AutoModelForCausalLM

    shutil.copytree(src, dst)
    model = AutoModelForCausalLM.from_pretrained(src).eval()
    scale = model.config.hidden_size**0.5
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 4.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0, :] = 0.0
            layer.mlp.down_proj.weight[0, :] = 0.0
        column = torch.zeros(model.lm_head.out_features)
        column[list(WAIT_IDS)] = 6.5 / scale
        column[EOS_ID] = 4.0 / scale
        model.lm_head.weight[:, 0] = column
    model.save_pretrained(dst)
    return dst


@pytest.fixture(scope="session")
def bt_instance(tmp_path_factory, tiny_dirs) -> tuple[Path, Path, Path]:
    """(DAGSTER_HOME, profile, outputs): the whole graph of a tiny profile (the backtracking checkpoint)
    materialized into a temp instance by ``python -m bt_assets.launch`` (as ``make demo`` does)."""
    outputs = tmp_path_factory.mktemp("server_outputs")
    model_dir = backtracking_checkpoint(tiny_dirs["qwen2"], outputs / "tiny_qwen2_wait")
    profile = write_profile(outputs, model_dir)
    home = tmp_path_factory.mktemp("server_dagster_home")
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home), "BT_PROFILE": str(profile)}
    log = outputs / "launch.log"
    t0 = time.monotonic()
    with log.open("w") as out:
        try:
            rc = subprocess.run(
                [sys.executable, "-m", "bt_assets.launch"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=LAUNCH_TIMEOUT_S,
            ).returncode
        except subprocess.TimeoutExpired:
            pytest.fail(f"bt_assets.launch ran over {LAUNCH_TIMEOUT_S}s:\n{tail(log)}")
    if rc != 0:
        pytest.fail(f"bt_assets.launch failed (exit {rc}):\n{tail(log)}")
    print(f"[server] graph materialized in {time.monotonic() - t0:.0f}s", flush=True)
    return home, profile, outputs


@pytest.fixture(scope="session")
def bt_server(bt_instance) -> Iterator[DagsterServer]:
    """``dagster dev -w workspace.yaml`` on a free localhost port over ``bt_instance``; ready once GraphQL
    serves the asset graph and the backfill and run-queue daemons report healthy."""
    home, profile, outputs = bt_instance
    port = free_port()
    log = outputs / "dagster_dev.log"
    server = DagsterServer(port=port, home=home, profile=profile, outputs=outputs, log=log)
    env = {**os.environ, "DAGSTER_HOME": str(home), "BT_PROFILE": str(profile), "PYTHONUNBUFFERED": "1"}
    exe = Path(sys.executable).with_name("dagster")
    cmd = [str(exe), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    t0 = time.monotonic()
    with log.open("w") as out:  # its own session: the whole process group is stopped at the end
        proc = subprocess.Popen(
            [sys.executable, "-c", DEFAULT_SIGNALS_EXEC, *cmd],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited ({proc.returncode}):\n{tail(log)}")
            try:
                if not server.gql(ASSET_NODES)["assetNodes"]:
                    return False
                statuses = server.gql(DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]
            except (OSError, AssertionError, KeyError, TypeError, ValueError):
                return False
            healthy = {s["daemonType"] for s in statuses if s["healthy"]}
            return healthy >= NEEDED_DAEMONS

        try:
            wait_for(ready, START_TIMEOUT_S, "dagster dev to serve the asset graph with healthy daemons")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{tail(log)}") from None
        print(f"[server] dagster dev ready on {server.url} in {time.monotonic() - t0:.0f}s", flush=True)
        yield server
    finally:
        _stop(proc)
