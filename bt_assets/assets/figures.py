"""Figures: one asset per PNG, depending on exactly the data assets it draws; each carries the file
path and an inline preview in its metadata, so the UI shows the picture beside its lineage."""

from collections.abc import Callable
from pathlib import Path

import dagster as dg
import polars as pl

from bt_assets.assets.common import provenance_metadata
from bt_assets.assets.events import analysis_view
from bt_assets.config import Profile
from bt_assets.lib import plots
from bt_assets.lib.rates import group_rates


def figure_asset(
    profile: Profile, name: str, group: str, ins: list[str], draw: Callable[..., object], description: str
) -> dg.AssetsDefinition:
    """An asset that draws ``figures/<name>.png`` from its inputs (passed to ``draw`` by name)."""

    @dg.asset(
        name=name,
        group_name=group,
        kinds={"matplotlib"},
        description=description,
        ins={i: dg.AssetIn(i) for i in ins},
    )
    def _figure(context: dg.AssetExecutionContext, **inputs) -> dg.MaterializeResult:
        path = profile.path("figures") / f"{name.removeprefix('fig_')}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        draw(path=path, **inputs)
        return dg.MaterializeResult(
            metadata=provenance_metadata(
                profile,
                path=dg.MetadataValue.path(str(path)),
                preview=dg.MetadataValue.md(plots.preview_markdown(Path(path), name)),
            )
        )

    return _figure


def build(profile: Profile, phase: int) -> list:
    det, grd = profile.detection.mode, profile.grading.mode
    variants, conditions = profile.variant_names, list(profile.phase1.conditions)

    def baseline_view(events: pl.DataFrame) -> pl.DataFrame:
        return analysis_view(events, det, grd).filter(pl.col("condition") == "baseline")

    def draw_variant(path, phase1_events):
        plots.bt_rate_by_variant(group_rates(baseline_view(phase1_events), "variant", variants), path)

    def draw_accuracy(path, metrics_corrected):
        plots.accuracy_by_bt(
            pl.DataFrame(metrics_corrected["figure_rows"]["accuracy_by_bt"]),
            path,
            lift=metrics_corrected["figure_rows"]["lift"],
            lift_ci=metrics_corrected["figure_rows"]["lift_ci"],
        )

    def draw_lens(path, logit_lens):
        plots.logit_lens(logit_lens, path)

    def draw_scan(path, ablation_scan, selected_layers):
        plots.ablation_importance(ablation_scan, path, selected=selected_layers)

    def draw_condition(path, phase1_events):
        view = analysis_view(phase1_events, det, grd).filter(pl.col("variant") == profile.ablation_variant)
        plots.by_condition(group_rates(view, "condition", conditions), path)

    def draw_format(path, phase1_events):
        plots.formatting_effect(group_rates(baseline_view(phase1_events), "variant", variants), path)

    def draw_p2_summary(path, metrics_corrected, phase1_events):
        plots.phase2_baseline_summary(
            metrics_corrected["figure_rows"]["summary"],
            group_rates(baseline_view(phase1_events), "variant", variants),
            path,
        )

    def draw_subset(path, sweep_results):
        rows = [{**r, "arm": r["subset"]} for r in sweep_results["subset"]]
        plots.subset_sweep(pl.DataFrame(rows), path)

    def draw_scale(path, sweep_results):
        plots.scale_tradeoff(pl.DataFrame(sweep_results["scale"]), path)

    def draw_continuation(path, continuation_ablation):
        from bt_assets.lib.sweep_stats import continuation_summary

        plots.continuation_effect(continuation_summary(continuation_ablation), path)

    if phase == 1:
        specs = [
            (
                "fig_bt_rate_by_variant",
                ["phase1_events"],
                draw_variant,
                "BT rate by prompt variant (baseline)",
            ),
            ("fig_accuracy_by_bt", ["metrics_corrected"], draw_accuracy, "accuracy with vs without BT"),
            ("fig_logit_lens", ["logit_lens"], draw_lens, "onset-token logit by layer, BT vs control"),
            (
                "fig_ablation_importance",
                ["ablation_scan", "selected_layers"],
                draw_scan,
                "onset-token logit change per ablated layer and component",
            ),
            (
                "fig_bt_rate_by_condition",
                ["phase1_events"],
                draw_condition,
                "BT rate and accuracy by condition",
            ),
            ("fig_formatting_effect", ["phase1_events"], draw_format, "formatting effect (baseline)"),
        ]
        group = "phase1_figures"
    else:
        specs = [
            (
                "fig_phase2_baseline_summary",
                ["metrics_corrected", "phase1_events"],
                draw_p2_summary,
                "deconfounded baseline summary",
            ),
            ("fig_phase2_subset_sweep", ["sweep_results"], draw_subset, "subset sweep: BT rate and accuracy"),
            ("fig_phase2_scale_tradeoff", ["sweep_results"], draw_scale, "scale sweep trade-off"),
            (
                "fig_phase2_continuation_effect",
                ["continuation_ablation"],
                draw_continuation,
                "P(onset token) at the onset position by scale",
            ),
        ]
        group = "phase2_figures"
    return [figure_asset(profile, n, group, ins, fn, d) for n, ins, fn, d in specs]
