"""Jobs (one per phase) and the nightly sweep schedule that fills missing or stale sweep cells."""

import json

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from bt_assets.config import Profile
from bt_assets.partitions import sweep_partitions

# The stages of Phase 1 (groups), and the figures/reports of each phase (group "reports", tag bt/phase).
PHASE1 = dg.AssetSelection.groups("data", "generation", "events", "analysis") | dg.AssetSelection.tag(
    "bt/phase", "1"
)
PHASE2 = dg.AssetSelection.groups("phase2") | dg.AssetSelection.tag("bt/phase", "2")
# A Dagster job holds at most one partitions definition, so each partitioned generation asset has its own
# job and the phase jobs hold the unpartitioned assets that read every cell.
PARTITIONED = {
    "phase1_generations": "phase1_generation_job",
    "ablation_generations": "ablation_generation_job",
    "sweep_generations": "sweep_job",
}


def jobs(profile: Profile) -> list:
    """Every job holds GPU assets, so each carries the profile's ``dagster-k8s/config`` run tag (the
    K8sRunLauncher's per-run pod resources) when ``k8s.gpu`` is set."""
    cells = dg.AssetSelection.assets(*PARTITIONED)
    gpu = profile.k8s_gpu_run_tags()
    return [
        dg.define_asset_job(
            "phase1_generation_job",
            selection=dg.AssetSelection.assets("phase1_generations"),
            executor_def=dg.in_process_executor,
            tags=gpu,
            description="Phase-1 baseline cells: select cells (a range is one run, one model load)",
        ),
        dg.define_asset_job(
            "ablation_generation_job",
            selection=dg.AssetSelection.assets("ablation_generations"),
            executor_def=dg.in_process_executor,
            tags=gpu,
            description="Phase-1 targeted/random ablation cells (needs selected_layers and random_layers)",
        ),
        dg.define_asset_job(
            "phase1_job",
            selection=PHASE1 - cells,
            executor_def=dg.in_process_executor,
            tags=gpu,
            description="Phase 1 after the generation cells: events, metrics, analysis, figures, report",
        ),
        dg.define_asset_job(
            "phase2_job",
            selection=PHASE2 - cells,
            executor_def=dg.in_process_executor,
            tags=gpu,
            description="Phase 2 after the sweep cells: results, continuation, hook stats, figures, report",
        ),
        dg.define_asset_job(
            "sweep_job",
            selection=dg.AssetSelection.assets("sweep_generations"),
            executor_def=dg.in_process_executor,
            tags=gpu,
            description="the sweep cells only: select cells and launch one run",
        ),
    ]


def missing_cells(keys: list[str], materialized: set[str], stale: set[str]) -> list[str]:
    return [k for k in keys if k not in materialized or k in stale]


def sweep_schedule(profile: Profile) -> dg.ScheduleDefinition:
    """ONE run covering every sweep cell not yet materialized, or materialized under another profile
    hash (stale after a config change). The run's partition range spans the first to the last such
    cell; cells in between that are complete reuse their chunks and cost nothing."""
    keys = sweep_partitions(profile).get_partition_keys()
    key = dg.AssetKey("sweep_generations")
    status = (
        dg.DefaultScheduleStatus.RUNNING
        if profile.phase2.schedule_enabled
        else dg.DefaultScheduleStatus.STOPPED
    )

    @dg.schedule(
        name="sweep_fill_schedule",
        job_name="sweep_job",
        cron_schedule=profile.phase2.schedule_cron or "0 2 * * *",
        default_status=status,
        description="nightly: one run for the sweep cells that are missing or stale",
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        instance = context.instance
        materialized = set(instance.get_materialized_partitions(key))
        want = profile.config_hash()
        records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1000).records
        latest: dict[str, str] = {}
        for rec in sorted(records, key=lambda r: r.timestamp):
            mat = rec.asset_materialization
            if mat and mat.partition and "profile_hash" in mat.metadata:
                latest[mat.partition] = str(mat.metadata["profile_hash"].value)
        stale = {k for k, h in latest.items() if h and h != want}
        todo = missing_cells(keys, materialized, stale)
        if not todo:
            return dg.SkipReason("every sweep cell is materialized under the current profile")
        idx = sorted(keys.index(k) for k in todo)
        return dg.RunRequest(
            run_key=f"sweep-{want}-{'-'.join(map(str, idx))}",
            tags={
                ASSET_PARTITION_RANGE_START_TAG: keys[idx[0]],
                ASSET_PARTITION_RANGE_END_TAG: keys[idx[-1]],
                "bt/missing_cells": json.dumps(todo),
                "bt/profile_hash": want,
            },
        )

    return _schedule
