"""A real ``dagster dev`` (webserver + daemon) over a throwaway instance that already holds the whole graph
of a tiny profile (``write_profile`` over a random Qwen2 checkpoint biased to say "Wait" + the demo
tokenizer; outputs under a temp dir).

Test modules load it with ``pytest_plugins = ["bt_assets_tests.server"]``: the fixtures are session-scoped,
so materializing the graph (``python -m bt_assets.launch``, 65-100 s on 2 cores) and starting the
server (~15 s) happen once per pytest run, whichever server tests are selected. At the end the whole process
group of ``dagster dev`` (webserver, daemon, code servers, runs) is stopped; nothing is left behind.

The helpers any test that talks to a Dagster UI needs live here too: ``free_port``, ``gql`` (a GraphQL POST),
``dagster_home`` and ``serving`` (a UI process started, awaited and stopped as a process group).
"""

from __future__ import annotations

import contextlib
import json
import os
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

from bt_assets_tests.conftest import ROOT, dagster_env, wait_biased_checkpoint, write_profile

LAUNCH_TIMEOUT_S = 900
START_TIMEOUT_S = 240
ASSET_NODES = "{ assetNodes { assetKey { path } } }"
DAEMONS = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"
# the daemons the server tests rely on: backfills, and the run queue (every UI launch is queued)
NEEDED_DAEMONS = {"BACKFILL", "QUEUED_RUN_COORDINATOR"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gql(url: str, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
    """POST ``query`` to the GraphQL endpoint of the Dagster UI at ``url``: the ``data`` of the answer; any
    GraphQL error fails with the messages."""
    req = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        answer = json.loads(resp.read())
    if answer.get("errors"):
        raise AssertionError(f"GraphQL errors: {json.dumps(answer['errors'], indent=1)}")
    return answer["data"]


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
    profile: Path | str  # BT_PROFILE
    log: Path  # the server's stdout + stderr
    outputs: Path | None = None  # the profile's storage/, figures/, reports/ live here

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage(self) -> Path:
        return self.outputs / "storage"

    def gql(self, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
        return gql(self.url, query, variables, timeout)


def dagster_home(path: Path) -> Path:
    """A DAGSTER_HOME at ``path`` with the repository's ``dagster.yaml`` (run queue, pools)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    return path


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


@contextlib.contextmanager
def serving(
    server: DagsterServer, cmd: list[str], ready: Callable[[], bool], timeout: float = START_TIMEOUT_S
) -> Iterator[DagsterServer]:
    """Run ``cmd`` (a Dagster UI on ``server.port``: ``cmd[0]`` an executable of this venv) in the
    repository, in its own session with the server's DAGSTER_HOME and BT_PROFILE, output to ``server.log``;
    yield the server once ``ready()`` holds, and stop its whole process group at the end."""
    env = dagster_env(server.home, server.profile, PYTHONUNBUFFERED="1")
    exe = Path(sys.executable).with_name(cmd[0])
    t0 = time.monotonic()
    with server.log.open("w") as out:  # its own session: the whole process group is stopped at the end
        proc = subprocess.Popen(
            [sys.executable, "-c", DEFAULT_SIGNALS_EXEC, str(exe), *cmd[1:]],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited ({proc.returncode}):\n{tail(server.log)}")
            try:
                return ready()
            except (OSError, AssertionError, KeyError, TypeError, ValueError):
                return False

        try:
            wait_for(up, timeout, f"{cmd[0]} on {server.url} to be ready")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{tail(server.log)}") from None
        print(f"[server] {cmd[0]} ready on {server.url} in {time.monotonic() - t0:.0f}s", flush=True)
        yield server
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def bt_instance(tmp_path_factory, tiny_dirs) -> tuple[Path, Path, Path]:
    """(DAGSTER_HOME, profile, outputs): the whole graph of a tiny profile (the backtracking checkpoint)
    materialized into a temp instance by ``python -m bt_assets.launch`` (as ``make demo`` does)."""
    outputs = tmp_path_factory.mktemp("server_outputs")
    model_dir = wait_biased_checkpoint(tiny_dirs["qwen2"], outputs / "tiny_qwen2_wait")
    profile = write_profile(outputs, model_dir)
    home = dagster_home(tmp_path_factory.mktemp("server_dagster_home"))
    env = dagster_env(home, profile)
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
    server = DagsterServer(free_port(), home, profile, log=outputs / "dagster_dev.log", outputs=outputs)

    def ready() -> bool:
        if not server.gql(ASSET_NODES)["assetNodes"]:
            return False
        statuses = server.gql(DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]
        return {s["daemonType"] for s in statuses if s["healthy"]} >= NEEDED_DAEMONS

    cmd = ["dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(server.port)]
    with serving(server, cmd, ready):
        yield server
