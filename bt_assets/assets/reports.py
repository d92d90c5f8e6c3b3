"""Reports stage, pages: markdown under ``paths.reports`` with provenance, computed tables with
intervals, the figures, and findings written from the numbers (``lib/report_pages``)."""

from datetime import UTC, datetime

import dagster as dg
import polars as pl

from bt_assets.assets import wiring as w
from bt_assets.config import Profile
from bt_assets.lib import frontier
from bt_assets.lib import report_pages as pages
from bt_assets.lib.chunkstore import atomic_write_bytes
from bt_assets.lib.events import analysis_view, baseline_view
from bt_assets.lib.onset_resample import resample_summary
from bt_assets.lib.rates import finished_summary


def build(profile: Profile) -> list:
    det, grd = profile.detection.mode, profile.grading.mode

    def page(title: str) -> pages.Page:
        prov = {**w.run_provenance(profile), "detection_mode": det, "grading_mode": grd}
        prov["generated"] = datetime.now(UTC).isoformat(timespec="seconds")
        dirs = {"figures_dir": profile.path("figures"), "reports_dir": profile.path("reports")}
        return pages.Page(title, prov, evidence=profile.analysis.evidence, **dirs)

    def written(name: str, text: str) -> dg.MaterializeResult:
        path = profile.path("reports") / name
        atomic_write_bytes(path, text.encode())
        return w.materialized(
            profile, path=dg.MetadataValue.path(str(path)), report=w.report_md(text, path.parent)
        )

    settings = {
        "variants": profile.variant_names,
        "conditions": profile.phase1_conditions,
        "ablation_variant": profile.ablation_variant,
        "detection": det,
        "grading": grd,
        "statistic": profile.analysis.statistic,
        "topk": profile.analysis.topk,
        "event_seed": profile.analysis.event_seed,
        "seed": profile.run.seed,  # bootstrap over problems
        "original_format": profile.path("storage") / "original_format",
        "truncation_warn_share": profile.analysis.truncation_warn_share,
        "max_new_tokens": profile.generation.max_new_tokens,
    }
    p1_deps = [f"fig_{n}" for _, n in pages.PHASE1_FIGURES]
    resampled = profile.phase2.onset_resamples
    intervened = bool(profile.phase2.interventions)
    p2_deps = [f"fig_{n}" for _, n in pages.phase2_figures(resampled is not None, intervened)]

    def frontier_of(inputs: dict) -> dict:
        table, events = inputs["intervention_results"], inputs["intervention_events"]
        ev, seed = profile.analysis.evidence, profile.run.seed
        vs = frontier.versus_ban(table, events, det, grd, seed, ev)
        return {
            "findings": frontier.frontier_findings(table, vs, ev),
            "section": frontier.frontier_section(table, vs),
        }

    def resamples_of(df: pl.DataFrame) -> dict | None:
        if resampled is None:
            return None
        summary = resample_summary(df, profile.run.seed)
        return {
            "summary": summary,
            "first_k_steps": resampled.first_k_steps,
            "window_tokens": resampled.window_tokens,
        }

    if profile.phase1.import_dir is not None:
        return [original_run_report(profile, page, written, settings)]

    @dg.asset(group_name="reports", kinds={"markdown"}, deps=p1_deps, tags={"bt/phase": "1"})
    def phase1_report(
        phase1_events: pl.DataFrame,
        metrics_corrected: dict,
        seed_compatible_tables: dict,
        logit_lens: pl.DataFrame,
        ablation_scan: pl.DataFrame,
        selected_layers: dict,
        random_layers: dict,
        event_sample: pl.DataFrame,
    ) -> dg.MaterializeResult:
        """Phase-1 report: provenance, baseline-only numbers with intervals, figures, findings."""
        layers = {"selected": selected_layers, "random": random_layers}
        text = pages.phase1_page(
            page("Backtracking as a state transition: Phase 1"),
            analysis_view(phase1_events, det, grd, keep=("finish_reason",)),
            metrics_corrected,
            seed_compatible_tables,
            logit_lens,
            ablation_scan,
            layers,
            event_sample,
            settings,
        )
        return written("phase1_report.md", text)

    p2_ins = ["phase1_events", "metrics_corrected", "sweep_results", "continuation_ablation", "hook_stats"]
    p2_ins += ["onset_resamples"] + (["intervention_results", "intervention_events"] if intervened else [])

    @dg.asset(
        group_name="reports",
        kinds={"markdown"},
        deps=p2_deps,
        tags={"bt/phase": "2"},
        ins={name: dg.AssetIn(name) for name in p2_ins},
    )
    def phase2_report(**inputs: object) -> dg.MaterializeResult:
        """Phase-2 report: deconfounded baseline, subset and scale sweeps, continuation, onset resamples,
        the intervention frontier (when configured), conclusions."""
        title = "Backtracking as a state transition: Phase 2"
        base = baseline_view(inputs["phase1_events"], det, grd, keep=("finish_reason",))
        finished = finished_summary(base, profile.run.seed)
        text = pages.phase2_page(
            page(title),
            inputs["metrics_corrected"],
            inputs["sweep_results"],
            inputs["continuation_ablation"],
            inputs["hook_stats"],
            settings,
            finished,
            resamples_of(inputs["onset_resamples"]),
            frontier_of(inputs) if intervened else None,
        )
        return written("phase2_report.md", text)

    return [phase1_report, phase2_report]


def original_run_report(profile: Profile, page, written, settings: dict) -> dg.AssetsDefinition:
    """Import mode: the original run re-analysed from its events (no completions, so no model stages)."""
    deps = [f"fig_{n}" for _, n in pages.ORIGINAL_RUN_FIGURES]

    @dg.asset(group_name="reports", kinds={"markdown"}, deps=deps, tags={"bt/phase": "1"})
    def original_run_report(
        phase1_events: pl.DataFrame, metrics_corrected: dict, seed_compatible_tables: dict
    ) -> dg.MaterializeResult:
        """The original run's headline (mixed conditions, buggy grader) next to the regraded baseline-only
        lift with its problem-bootstrap interval and counts; rates by variant and condition; figures."""
        det, grd = profile.detection.mode, profile.grading.mode
        view = analysis_view(phase1_events, det, grd, keep=("finish_reason",))
        title = "The original Phase-1 run, re-analysed from its events"
        text = pages.original_run_page(page(title), view, metrics_corrected, seed_compatible_tables, settings)
        return written("original_run_report.md", text)

    return original_run_report
