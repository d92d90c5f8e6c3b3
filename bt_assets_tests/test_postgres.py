"""PostgreSQL instance storage against a REAL server: ``deploy/postgres/dagster.yaml`` (credentials from
the environment only) backs a Dagster instance, the graph up to ``sweep_generations`` materializes
through ``bt_assets.launch`` in waves (the sweep cells as ONE run carrying the partition-range tags,
like a single-run backfill), and the runs, tags and materializations are read back both through a
fresh ``DagsterInstance`` and straight from the database with psql.

The server comes from Debian's ``postgresql`` package (``/usr/lib/postgresql/*/bin``): ``initdb`` into
a temporary directory, ``pg_ctl start`` on a free 127.0.0.1 port, stopped in a ``finally``. As root the
server runs as an unprivileged user (``postgres`` when it exists, else ``nobody``). Without the
binaries or dagster-postgres the test skips locally and FAILS when ``CI`` is set.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from bt_assets.definitions import build_definitions
from bt_assets_tests.conftest import ROOT, run_waves, tiny_profile, unavailable
from bt_assets_tests.server import free_port

pytestmark = pytest.mark.slow

PG_YAML = ROOT / "deploy" / "postgres" / "dagster.yaml"
SWEEP = dg.AssetKey("sweep_generations")


def pg_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` with initdb, pg_ctl and psql."""

    def major(d: str) -> int:
        part = Path(d).parent.name
        return int(part) if part.isdigit() else -1

    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True):
        if all((Path(d) / exe).is_file() for exe in ("initdb", "pg_ctl", "psql")):
            return Path(d)
    return None


@dataclass
class PgServer:
    bindir: Path
    root: Path  # owned by the server's OS user
    port: int
    prefix: list[str]  # runs a command as the server's OS user
    env: dict[str, str]  # the DAGSTER_PG_* variables deploy/postgres/dagster.yaml reads

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sock(self) -> Path:
        return self.root / "sock"

    def run(self, exe: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [*self.prefix, str(self.bindir / exe), *args]
        env = {**os.environ, "LC_ALL": "C", "PGTZ": "UTC"}
        proc = subprocess.run(cmd, cwd=self.root, env=env, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{exe} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def sql(self, query: str, db: str = "postgres") -> list[str]:
        """Superuser psql over the server's unix socket (trust auth, local only); one row per line."""
        args = ["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", str(self.sock), "-p", str(self.port)]
        out = self.run("psql", *args, "-U", "postgres", "-d", db, "-c", query).stdout
        return [line for line in out.splitlines() if line]


def os_user_prefix() -> tuple[list[str], int | None, int | None]:
    """How to run the server unprivileged: as root, through runuser (or setpriv) to postgres/nobody."""
    if os.geteuid() != 0:
        return [], None, None
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return ["runuser", "-u", name, "--"], user.pw_uid, user.pw_gid
        if shutil.which("setpriv"):
            ids = [f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
            return ["setpriv", *ids], user.pw_uid, user.pw_gid
    unavailable("running as root with no unprivileged user or no runuser/setpriv to start PostgreSQL")


@pytest.fixture(scope="module")
def pg():
    bindir = pg_bindir()
    if bindir is None:
        unavailable("no PostgreSQL binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    try:
        import dagster_postgres  # noqa: F401
    except ImportError:
        unavailable("dagster-postgres is not installed (pip install -e '.[deploy]')")
    prefix, uid, gid = os_user_prefix()
    # Directly under the system temp dir: pytest's tmp_path sits below a root-only (0700) directory.
    root = Path(tempfile.mkdtemp(prefix="bt-pg-"))
    (root / "sock").mkdir()
    if uid is not None:
        for p in (root, root / "sock"):
            os.chown(p, uid, gid)
    user, password, db = "bt_dagster", secrets.token_urlsafe(18), "bt_dagster"
    server = PgServer(
        bindir=bindir,
        root=root,
        port=free_port(),
        prefix=prefix,
        env={
            "DAGSTER_PG_USERNAME": user,
            "DAGSTER_PG_PASSWORD": password,
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_DB": db,
            "DAGSTER_PG_PORT": "",
        },
    )
    server.env["DAGSTER_PG_PORT"] = str(server.port)
    started = False
    try:
        server.run(
            "initdb", "-D", str(server.data), "-U", "postgres", "--encoding=UTF8", "--locale=C",
            "--auth-local=trust", "--auth-host=scram-sha-256",
        )  # fmt: skip
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {server.port} -k {server.sock} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(server.root / "server.log")
        started = True  # from here a partial start must be stopped too
        server.run("pg_ctl", "-D", str(server.data), "-l", log, "-o", opts, "-w", "-t", "60", "start")
        server.sql(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
        server.sql(f"CREATE DATABASE {db} OWNER {user}")
        yield server
    finally:
        if started:
            server.run("pg_ctl", "-D", str(server.data), "-m", "fast", "-w", "-t", "60", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def materialized(pg, tmp_path_factory, tiny_dirs):
    """The graph up to sweep_generations, wave by wave, on a Postgres-backed DAGSTER_HOME."""
    tmp = tmp_path_factory.mktemp("pg_graph")
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(PG_YAML, home / "dagster.yaml")
    with pytest.MonkeyPatch.context() as mp:
        for key, val in {**pg.env, "DAGSTER_HOME": str(home)}.items():
            mp.setenv(key, val)
        defs = build_definitions(tiny_profile(tmp, tiny_dirs["qwen2"]))
        selection = dg.AssetSelection.assets(SWEEP).upstream().resolve(defs.resolve_asset_graph())
        with dg.DagsterInstance.get() as instance:
            waves = run_waves(defs, selection, instance)
        yield {"defs": defs, "waves": waves, "home": home}


def test_instance_uses_postgres_storage(pg, materialized, monkeypatch):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    for key, val in {**pg.env, "DAGSTER_HOME": str(materialized["home"])}.items():
        monkeypatch.setenv(key, val)
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    # nothing fell back to SQLite files in DAGSTER_HOME
    assert not list(materialized["home"].rglob("*.db"))
    # the yaml names the credentials by environment variable only
    text = PG_YAML.read_text()
    for var in ("DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOST", "DAGSTER_PG_DB"):
        assert f"env: {var}" in text
    assert pg.env["DAGSTER_PG_PASSWORD"] not in text


def test_runs_and_range_run_in_postgres(pg, materialized, monkeypatch):
    waves, defs = materialized["waves"], materialized["defs"]
    keys = defs.resolve_asset_graph().get(SWEEP).partitions_def.get_partition_keys()
    for key, val in {**pg.env, "DAGSTER_HOME": str(materialized["home"])}.items():
        monkeypatch.setenv(key, val)
    # a fresh instance (new connections) reads everything back from the server
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert len(runs) == len(waves)
        assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
        sweep_runs = [r for r in runs if r.asset_selection and SWEEP in r.asset_selection]
        assert len(sweep_runs) == 1, "all sweep cells go in ONE run"
        sweep_run_id, tags = sweep_runs[0].run_id, sweep_runs[0].tags
        assert tags[ASSET_PARTITION_RANGE_START_TAG] == keys[0]
        assert tags[ASSET_PARTITION_RANGE_END_TAG] == keys[-1]
        assert set(instance.get_materialized_partitions(SWEEP)) == set(keys)
        for wave in waves:
            for key in wave:
                assert instance.get_latest_materialization_event(key) is not None, key

    # ... and straight from the database, without Dagster in between
    db = pg.env["DAGSTER_PG_DB"]
    assert pg.sql("SELECT count(*) FROM runs WHERE status = 'SUCCESS'", db) == [str(len(waves))]
    range_tags = pg.sql(
        "SELECT key || '=' || value FROM run_tags WHERE key LIKE 'dagster/asset_partition_range_%' "
        f"AND run_id = '{sweep_run_id}' ORDER BY key DESC",
        db,
    )
    assert range_tags == [
        f"{ASSET_PARTITION_RANGE_START_TAG}={keys[0]}",
        f"{ASSET_PARTITION_RANGE_END_TAG}={keys[-1]}",
    ]
    parts = pg.sql(
        "SELECT DISTINCT partition FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
        f"AND asset_key = '{SWEEP.to_string()}'",
        db,
    )
    assert set(parts) == set(keys)
    n_mat = pg.sql(
        "SELECT count(DISTINCT asset_key) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'",
        db,
    )
    assert n_mat == [str(sum(len(w) for w in waves))]
