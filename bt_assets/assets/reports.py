"""Reports: markdown under ``paths.reports`` with provenance, computed tables, figures and findings."""

import json
from datetime import UTC, datetime

import dagster as dg
import polars as pl

from bt_assets.assets.common import provenance, provenance_metadata
from bt_assets.assets.events import analysis_view
from bt_assets.config import Profile
from bt_assets.lib import report as R
from bt_assets.lib.chunkstore import atomic_write_bytes
from bt_assets.lib.provenance import hardware, software
from bt_assets.lib.rates import group_rates
from bt_assets.lib.sweep_stats import continuation_summary

P1_FIGS = [
    ("BT rate by variant (baseline)", "bt_rate_by_variant"),
    ("Accuracy with vs without BT (baseline)", "accuracy_by_bt"),
    ("Logit lens: BT vs control", "logit_lens"),
    ("Ablation importance by layer", "ablation_importance"),
    ("BT rate and accuracy by condition", "bt_rate_by_condition"),
    ("Formatting effect (baseline)", "formatting_effect"),
]
P2_FIGS = [
    ("Deconfounded baseline summary", "phase2_baseline_summary"),
    ("Subset sweep", "phase2_subset_sweep"),
    ("Scale trade-off", "phase2_scale_tradeoff"),
    ("Continuation ablation", "phase2_continuation_effect"),
]
RATE_FMT = {"bt_rate": "pct", "accuracy": "pct"}


def header(profile: Profile, title: str) -> str:
    prov = {
        **provenance(profile),
        "hardware": hardware(),
        "software": software(),
        "detection_mode": profile.detection.mode,
        "grading_mode": profile.grading.mode,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return f"# {title}\n\n## Provenance\n\n{R.provenance_block(prov)}\n"


def write_report(profile: Profile, name: str, text: str) -> dg.MaterializeResult:
    path = profile.path("reports") / name
    atomic_write_bytes(path, text.encode())
    return dg.MaterializeResult(
        metadata=provenance_metadata(
            profile, path=dg.MetadataValue.path(str(path)), report=dg.MetadataValue.md(text)
        )
    )


def rate_table(rates: pl.DataFrame, key: str) -> str:
    """Counts, rates and Wilson 95% intervals (percent) per group."""

    def ci(lo: str, hi: str) -> pl.Expr:
        return pl.format("[{}, {}]", (pl.col(lo) * 100).round(1), (pl.col(hi) * 100).round(1))

    df = rates.with_columns(ci("bt_lo", "bt_hi").alias("bt_95ci"), ci("acc_lo", "acc_hi").alias("acc_95ci"))
    return R.md_table(
        df.select(key, "n", "bt_count", "bt_rate", "bt_95ci", "correct", "accuracy", "acc_95ci"), RATE_FMT
    )


def figs(profile: Profile, names: list[tuple[str, str]]) -> str:
    root = profile.path("figures")
    return R.figures_block([(t, root / f"{n}.png") for t, n in names], profile.path("reports"))


def build(profile: Profile, phase: int) -> list:
    det, grd = profile.detection.mode, profile.grading.mode
    variants, conditions = profile.variant_names, list(profile.phase1.conditions)

    if phase == 1:

        @dg.asset(group_name="phase1_report", kinds={"markdown"}, deps=[f"fig_{n}" for _, n in P1_FIGS])
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
            view = analysis_view(phase1_events, det, grd)
            base = view.filter(pl.col("condition") == "baseline")
            s = metrics_corrected["figure_rows"]["summary"]
            orig = seed_compatible_tables["metrics_v2.json"]["backtracking_vs_accuracy"][
                "accuracy_lift_ratio"
            ]
            cond = group_rates(
                view.filter(pl.col("variant") == profile.ablation_variant), "condition", conditions
            )
            bt_sample = event_sample.filter(pl.col("kind") == "bt")
            n_bt, bt_problems = bt_sample.height, bt_sample["example_id"].n_unique()
            evidence = profile.analysis.evidence
            text = "\n".join(
                [
                    header(profile, "Backtracking as a state transition: Phase 1"),
                    "## Findings\n",
                    f"- Baseline BT rate {R.pct(s['bt_rate'])}{R.interval(s['bt_lo'], s['bt_hi'])} "
                    f"over {s['n']} "
                    f"completions ({det} detection); accuracy {R.pct(s['accuracy'])}"
                    f"{R.interval(s['acc_lo'], s['acc_hi'])} ({grd} grading, denominator: all completions).",
                    f"- {R.lift_finding(s, orig, evidence)}",
                    f"- {R.lens_finding(logit_lens, bt_problems, evidence)}",
                    f"- {R.scan_finding(ablation_scan, selected_layers, bt_problems, evidence)}",
                    f"- {R.condition_finding(cond)}",
                    "\n## Baseline by variant\n\n"
                    + rate_table(group_rates(base, "variant", variants), "variant"),
                    f"\n## Conditions ({profile.ablation_variant})\n\n{rate_table(cond, 'condition')}",
                    f"\n## Layers\n\nSelected ({profile.analysis.statistic}, top {profile.analysis.topk}):\n"
                    f"```json\n{json.dumps(selected_layers)}\n```\nRandom controls per seed:\n"
                    f"```json\n{json.dumps(random_layers)}\n```\n"
                    f"Teacher-forced stages analysed {n_bt} BT events from {bt_problems} problems, sampled "
                    f"at random across problems (seed {profile.analysis.event_seed}).",
                    f"\n## Figures\n\n{figs(profile, P1_FIGS)}",
                    "\n## Seed-compatible tables\n\nThe original's files, recomputed with its definitions "
                    "(mixed conditions and denominators), are under "
                    f"`{profile.path('storage') / 'original_format'}`.",
                ]
            )
            return write_report(profile, "phase1_report.md", text + "\n")

        return [phase1_report]

    @dg.asset(group_name="phase2_report", kinds={"markdown"}, deps=[f"fig_{n}" for _, n in P2_FIGS])
    def phase2_report(
        metrics_corrected: dict,
        sweep_results: dict,
        continuation_ablation: pl.DataFrame,
        hook_stats: pl.DataFrame,
    ) -> dg.MaterializeResult:
        """Phase-2 report: deconfounded baseline, subset and scale sweeps, continuation, conclusions."""
        s = metrics_corrected["figure_rows"]["summary"]
        cols = [
            "subset",
            "scale",
            "num_components",
            "n",
            "bt_rate",
            "accuracy",
            "delta_bt",
            "delta_acc",
            "mean_tokens",
            "truncated_share",
        ]
        fmt = {**RATE_FMT, "delta_bt": "f2", "delta_acc": "f2", "mean_tokens": "f2", "truncated_share": "f2"}
        subset = (
            pl.DataFrame(sweep_results["subset"]).select(cols) if sweep_results["subset"] else pl.DataFrame()
        )
        scale = (
            pl.DataFrame(sweep_results["scale"]).select(cols) if sweep_results["scale"] else pl.DataFrame()
        )
        cont = continuation_summary(continuation_ablation)
        text = "\n".join(
            [
                header(profile, "Backtracking as a state transition: Phase 2"),
                "## Conclusions (computed)\n",
                f"- {R.lift_finding(s, None, profile.analysis.evidence)}",
                f"- {R.sweep_finding(sweep_results, profile.analysis.evidence)}",
                f"- {R.scale_finding(sweep_results, profile.analysis.evidence)}",
                f"- {R.continuation_finding(cont)}",
                f"\n## Subset sweep\n\n{R.md_table(subset, fmt) if subset.height else 'no cells'}",
                f"\n## Scale sweep\n\n{R.md_table(scale, fmt) if scale.height else 'no cells'}",
                f"\nPaired changes (delta_*) are cell minus baseline over the same (problem, sample) pairs; "
                f"accuracy denominator: {sweep_results['accuracy_denominator']}.",
                "\n## Continuation ablation\n\n"
                + (R.md_table(cont, {"p_onset_mean": "pct"}) if cont.height else "none"),
                f"\n## Hook calls\n\n{hook_stats.height} (cell, phase, component, layer) rows; "
                "see the `hook_stats` asset.",
                f"\n## Figures\n\n{figs(profile, P2_FIGS)}",
            ]
        )
        return write_report(profile, "phase2_report.md", text + "\n")

    return [phase2_report]
