"""Jobs (one per phase), the run tags that show a run's resolved profile, and the declarative automation
that fills missing or out-of-date sweep cells (it replaced a hand-written schedule)."""

import dagster as dg

from bt_assets.config import Profile
from bt_assets.metadata import run_tags

DEFAULT_CRON = "0 2 * * *"  # nightly, when phase2.schedule_cron is not set
# the Phase-2 cells that automation fills (the intervention cells exist when phase2.interventions is set)
CELL_ASSETS = ("sweep_generations", "intervention_generations")

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
    "intervention_generations": "intervention_job",
}


def jobs(profile: Profile) -> list:
    """Every job holds GPU assets, so each carries the profile's ``dagster-k8s/config`` run tag (the
    K8sRunLauncher's per-run pod resources) when ``k8s.gpu`` is set, beside the profile tags."""
    cells = dg.AssetSelection.assets(*PARTITIONED)
    frontier = (
        [
            dg.define_asset_job(
                "intervention_job",
                selection=dg.AssetSelection.assets("intervention_generations"),
                executor_def=dg.in_process_executor,
                tags={**run_tags(profile), **profile.k8s_gpu_run_tags()},
                description="the intervention frontier's cells only: select cells and launch one run",
            )
        ]
        if profile.phase2.interventions
        else []
    )
    gpu = {**run_tags(profile), **profile.k8s_gpu_run_tags()}
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
        *frontier,
    ]


def sweep_condition(profile: Profile) -> dg.AutomationCondition:
    """When a sweep cell is requested: on a tick of ``phase2.schedule_cron``, if it is missing or the
    asset's code version (its profile slice or code, ``bt_assets.versions``) changed since the cell was
    last materialized; never while the cell, or an input it reads, is in a run or backfill, nor while an
    input is missing. A failed run leaves its cells requested again on the next tick."""
    ac = dg.AutomationCondition
    changed = ac.code_version_changed().since(ac.newly_updated()).with_label("code version changed")
    return (
        ac.cron_tick_passed(profile.phase2.schedule_cron or DEFAULT_CRON)
        & (ac.missing() | changed)
        & ~ac.in_progress()
        & ~ac.any_deps_in_progress()
        & ~ac.any_deps_missing()
    ).with_label("sweep cell missing or out of date, on the cron tick")


def sweep_sensor(profile: Profile) -> dg.AutomationConditionSensorDefinition:
    """Evaluates ``sweep_condition`` (the daemon of ``dg dev``); stopped unless
    ``phase2.schedule_enabled``. The requested cells go out as ONE backfill, which the single-run
    backfill policy turns into one run (one model load) per contiguous range of partition keys: the
    keys are ordered so that cells which go out of date together are adjacent (``partitions``)."""
    status = (
        dg.DefaultSensorStatus.RUNNING if profile.phase2.schedule_enabled else dg.DefaultSensorStatus.STOPPED
    )
    return dg.AutomationConditionSensorDefinition(
        "sweep_automation_sensor",
        target=dg.AssetSelection.assets(*CELL_ASSETS[: 2 if profile.phase2.interventions else 1]),
        default_status=status,
        run_tags=run_tags(profile),
        description="requests missing or out-of-date sweep cells on phase2.schedule_cron",
    )
