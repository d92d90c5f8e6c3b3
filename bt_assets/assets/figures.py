"""Reports stage, figures: one asset per PNG, depending on exactly the data assets it draws; each
carries the file path and an inline preview in its metadata, so the UI shows the picture beside its
lineage. A figure whose data are all missing fails (``FigureDataError``) instead of drawing nothing."""

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
import polars as pl
from matplotlib.figure import Figure

from bt_assets.assets import wiring as w
from bt_assets.config import Profile
from bt_assets.lib import plots
from bt_assets.lib.conditions import with_pooled_random
from bt_assets.lib.events import analysis_view
from bt_assets.lib.onset_resample import resample_summary
from bt_assets.lib.rates import group_rates
from bt_assets.lib.sweep_stats import continuation_summary


@dataclass(frozen=True)
class FigureSpec:
    """A figure: ``figures/<name>.png`` drawn by ``draw``, whose parameter names are the assets it reads."""

    name: str
    phase: int
    draw: Callable[..., Figure]
    description: str

    @property
    def ins(self) -> list[str]:
        return list(inspect.signature(self.draw).parameters)


def figure_asset(profile: Profile, spec: FigureSpec) -> dg.AssetsDefinition:
    """An asset that draws ``figures/<name>.png`` from its inputs."""

    @dg.asset(
        name=f"fig_{spec.name}",
        group_name="reports",
        kinds={"matplotlib"},
        tags={"bt/phase": str(spec.phase)},
        description=spec.description,
        ins={i: dg.AssetIn(i) for i in spec.ins},
    )
    def _figure(**inputs: object) -> dg.MaterializeResult:
        path = plots.save(spec.draw(**inputs), profile.path("figures") / f"{spec.name}.png")
        preview = dg.MetadataValue.md(plots.preview_markdown(path, f"fig_{spec.name}"))
        return w.materialized(profile, path=dg.MetadataValue.path(str(path)), preview=preview)

    return _figure


def build(profile: Profile) -> list:
    variants, conditions = profile.variant_names, profile.phase1_conditions

    def by_variant(events: pl.DataFrame) -> pl.DataFrame:
        return group_rates(w.baseline(profile, events), "variant", variants, seed=profile.run.seed)

    def variant_rates(phase1_events: pl.DataFrame) -> Figure:
        return plots.bt_rate_by_variant(by_variant(phase1_events))

    def formatting(phase1_events: pl.DataFrame) -> Figure:
        return plots.formatting_effect(by_variant(phase1_events))

    def condition_rates(phase1_events: pl.DataFrame) -> Figure:
        view = analysis_view(phase1_events, profile.detection.mode, profile.grading.mode)
        view = view.filter(pl.col("variant") == profile.ablation_variant)
        view, conds = with_pooled_random(view, conditions)
        return plots.by_condition(group_rates(view, "condition", conds, seed=profile.run.seed))

    def accuracy(metrics_corrected: dict) -> Figure:
        rows = metrics_corrected["figure_rows"]
        lift = rows["summary"]["lift"], rows["summary"]["lift_lo"], rows["summary"]["lift_hi"]
        return plots.accuracy_by_bt(rows["accuracy_by_bt"], lift=lift[0], lift_ci=lift[1:])

    def lens(logit_lens: pl.DataFrame) -> Figure:
        return plots.logit_lens(logit_lens)

    def scan(ablation_scan: pl.DataFrame, selected_layers: dict) -> Figure:
        return plots.ablation_importance(ablation_scan, selected=selected_layers)

    def summary(metrics_corrected: dict, phase1_events: pl.DataFrame) -> Figure:
        s = metrics_corrected["figure_rows"]["summary"]
        return plots.phase2_baseline_summary(s, by_variant(phase1_events))

    def subsets(sweep_results: dict) -> Figure:
        return plots.subset_sweep(sweep_results["subset"])

    def scales(sweep_results: dict) -> Figure:
        return plots.scale_tradeoff(sweep_results["scale"])

    def phrases(sweep_results: dict) -> Figure:
        cells = {r["cell"]: r["n"] for r in sweep_results["cells"]}
        return plots.onset_phrases(sweep_results["onset_phrases"], cells=cells)

    def tradeoff(intervention_results: pl.DataFrame) -> Figure:
        return plots.tradeoff_frontier(intervention_results)

    def resamples(onset_resamples: pl.DataFrame) -> Figure:
        cfg = profile.phase2.onset_resamples
        summary = resample_summary(onset_resamples, profile.run.seed)
        return plots.onset_resamples(
            summary, first_k_steps=cfg.first_k_steps, window_tokens=cfg.window_tokens
        )

    def continuation(continuation_ablation: pl.DataFrame) -> Figure:
        return plots.continuation_effect(continuation_summary(continuation_ablation))

    specs = [
        FigureSpec("bt_rate_by_variant", 1, variant_rates, "BT rate by prompt variant (baseline)"),
        FigureSpec("accuracy_by_bt", 1, accuracy, "accuracy with vs without BT"),
        FigureSpec("logit_lens", 1, lens, "onset-token logit by layer, BT vs control"),
        FigureSpec(
            "ablation_importance", 1, scan, "onset-token logit change per ablated layer and component"
        ),
        FigureSpec("bt_rate_by_condition", 1, condition_rates, "BT rate and accuracy by condition"),
        FigureSpec("formatting_effect", 1, formatting, "formatting effect (baseline)"),
        FigureSpec("phase2_baseline_summary", 2, summary, "deconfounded baseline summary"),
        FigureSpec("phase2_subset_sweep", 2, subsets, "subset sweep: BT rate and accuracy"),
        FigureSpec("phase2_scale_tradeoff", 2, scales, "scale sweep trade-off"),
        FigureSpec("phase2_onset_phrases", 2, phrases, "onset phrases per sweep cell"),
        FigureSpec(
            "phase2_continuation_effect", 2, continuation, "P(onset token) at the onset position by scale"
        ),
    ]
    if profile.phase2.interventions:
        specs.append(
            FigureSpec("tradeoff_frontier", 2, tradeoff, "every intervention family on one frontier")
        )
    if profile.phase2.onset_resamples is not None:
        specs.append(FigureSpec("phase2_onset_resamples", 2, resamples, "onset resamples: clean vs ablated"))
    if profile.phase1.import_dir is not None:  # an imported run has events only: the figures of events
        specs = [s for s in specs if set(s.ins) <= {"phase1_events", "metrics_corrected"}]
    return [figure_asset(profile, s) for s in specs]
