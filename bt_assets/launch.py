"""Materialize the whole graph of the active profile, then the re-analysed original run (the second code
location, ``bt_assets.original_run``): ``python -m bt_assets.launch`` (``make demo``).

Dagster puts one partitions definition in a run, so the graph is split into a few runs in
topological order (``plan_waves``): each holds at most one partitioned asset, whose partitions all
run in that ONE run (its single-run backfill policy), plus every unpartitioned asset that is ready
before it. Runs go to the persistent instance in ``DAGSTER_HOME``, so ``dg dev`` shows them
afterwards. Finished generation chunks are reused, so an interrupted demo resumes where it stopped.

The runs execute in this process (``execute_in_process``), not through the run queue: queueing needs
the daemon and a code-server process per run (tens of seconds each on 2 cores, against a 10-minute
demo). GPU exclusivity still holds: each run is recorded with its pools, so the daemon of a
concurrent ``dg dev`` does not dequeue a ``gpu`` run while one of these is in progress, and before each
run that holds a ``gpu`` asset this launcher waits until no other run of the instance holds the pool.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import dagster as dg

from bt_assets.config import REPO_ROOT, Profile
from bt_assets.metadata import run_tags

# Dagster's documented run tags of a partition-range run (what a single-run backfill launches)
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
GPU_POOL = "gpu"
IN_PROGRESS = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
PID_TAG, HOST_TAG = "bt/launcher_pid", "bt/launcher_host"  # which process runs an in-process run


def ensure_dagster_home() -> Path:
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def plan_waves(defs: dg.Definitions, selection: set[dg.AssetKey] | None = None) -> list[list[dg.AssetKey]]:
    """Group the graph into as few runs as possible, in topological order.

    A run holds at most one partitioned asset (a job has one partitions definition) and never an
    unpartitioned asset downstream of it (that asset reads every cell, so it waits for the next run);
    everything else whose parents are done or earlier in the same run joins it. Fewer runs means fewer
    model loads and less per-run overhead (the demo: 4 runs instead of one per graph level).
    """
    graph = defs.resolve_asset_graph()
    keys = [k for k in graph.toposorted_asset_keys if graph.get(k).is_materializable]
    todo = [k for k in keys if selection is None or k in selection]
    waves: list[list[dg.AssetKey]] = []
    done: set[dg.AssetKey] = set()
    while todo:
        wave: list[dg.AssetKey] = []
        blocked: set[dg.AssetKey] = set()  # the wave's partitioned asset and what waits for it
        part = None
        for k in todo:
            parents = [p for p in graph.get(k).parent_keys if p in todo or p in done]
            if any(p not in done and p not in wave for p in parents) or any(p in blocked for p in parents):
                blocked.add(k)
                continue
            if graph.get(k).partitions_def is not None:
                if part is not None:
                    blocked.add(k)
                    continue
                part = k
                blocked.add(k)
            wave.append(k)
        waves.append(wave)
        done.update(wave)
        todo = [k for k in todo if k not in done]
    return waves


def gpu_runs_in_progress(instance: dg.DagsterInstance) -> list[str]:
    """Ids of the instance's in-progress runs that hold the ``gpu`` pool (recorded at run creation). A run
    this launcher started on this host whose process is gone (killed: SIGKILL, OOM, a closed terminal)
    can never finish; it is marked failed here, as Dagster's run monitoring would, instead of holding
    the pool for good (its finished chunks stay on disk and the next run reuses them)."""
    records = instance.get_run_records(dg.RunsFilter(statuses=IN_PROGRESS))
    busy = []
    for r in records:
        run = r.dagster_run
        if GPU_POOL not in (getattr(run.run_op_concurrency, "all_pools", None) or ()):
            continue
        if launcher_gone(run.tags):
            instance.report_run_failed(run, f"launcher process {run.tags[PID_TAG]} is gone (killed)")
            continue
        busy.append(run.run_id)
    return busy


def launcher_gone(tags: dict[str, str]) -> bool:
    """True when ``tags`` name a launcher process on this host that no longer exists."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return False
    try:
        os.kill(int(tags[PID_TAG]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def wait_for_gpu(instance: dg.DagsterInstance, poll_s: float = 5.0, timeout_s: float = 24 * 3600) -> None:
    """Block while another run holds the ``gpu`` pool (a queued run the daemon started, another
    launcher), as the run queue would; a message says which run is waited for."""
    deadline = time.monotonic() + timeout_s
    while busy := gpu_runs_in_progress(instance):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gpu pool stayed busy for {timeout_s:.0f}s (runs {busy})")
        print(f"[bt] waiting for run(s) {', '.join(busy)} to release the gpu pool", flush=True)
        time.sleep(poll_s)


def run_wave(
    defs: dg.Definitions,
    wave: list[dg.AssetKey],
    instance: dg.DagsterInstance,
    profile: Profile | None = None,
) -> bool:
    """One run of ``wave`` (every partition of its partitioned asset, one range), in this process; tagged
    with ``profile`` (its resolved profile on the run page) when given."""
    graph = defs.resolve_asset_graph()
    tags: dict[str, str] = {"bt/launcher": "launch", **(run_tags(profile) if profile else {})}
    tags |= {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}  # a killed run frees the pool
    for key in wave:
        pdef = graph.get(key).partitions_def
        if pdef is not None:
            pkeys = pdef.get_partition_keys()
            tags |= {RANGE_START_TAG: pkeys[0], RANGE_END_TAG: pkeys[-1]}
    if any(graph.get(key).pools & {GPU_POOL} for key in wave):
        wait_for_gpu(instance)
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, asset_selection=wave, tags=tags, raise_on_error=False)
    return result.success


def materialize_all(
    defs: dg.Definitions, instance: dg.DagsterInstance, profile: Profile | None = None
) -> bool:
    waves = plan_waves(defs)
    for i, wave in enumerate(waves, 1):
        names = ", ".join(k.to_user_string() for k in wave)
        print(f"[bt] run {i}/{len(waves)}: {names}", flush=True)
        t0 = time.perf_counter()
        if not run_wave(defs, wave, instance, profile):
            print(f"[bt] run {i} failed; see the run log (dagster dev) — rerun resumes", file=sys.stderr)
            return False
        print(f"[bt] run {i} done in {time.perf_counter() - t0:.0f}s", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    """The live demo graph, then the original run re-analysed from its events (seconds); prints where
    each location's outputs and reports are. ``--only original_run`` builds just the latter."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["demo", "original_run"], help="build one code location only")
    only = parser.parse_args(argv).only
    ensure_dagster_home()
    from bt_assets import original_run
    from bt_assets.definitions import defs, profile

    locations = {"demo": (profile, defs), "original_run": (original_run.profile, original_run.defs)}
    ok = True
    with dg.DagsterInstance.get() as instance:
        for name, (loc_profile, loc_defs) in locations.items():
            if only not in (None, name):
                continue
            t0 = time.perf_counter()
            ok = ok and materialize_all(loc_defs, instance, loc_profile)
            print(
                f"[bt] profile {loc_profile.profile_name} ({loc_profile.config_hash()}): "
                f"{'done' if ok else 'FAILED'} in {time.perf_counter() - t0:.0f}s"
            )
            for kind in ("storage", "figures", "reports"):
                print(f"[bt]   {kind:8s} {loc_profile.path(kind)}")
    if only != "original_run":
        for report in ("phase1_report.md", "phase2_report.md"):
            print(f"[bt] demo report:         {profile.path('reports') / report}")
    if only != "demo":
        print(f"[bt] original-run report: {original_run.profile.path('reports') / 'original_run_report.md'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
