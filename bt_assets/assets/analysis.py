"""Analysis stage: teacher-forced measurements at the backtracking onset on a seeded sample of BT
events and position-matched controls (logit lens, single-component ablation scan), and the layers the
ablation cells and sweeps act on (top-k selected, shape-matched random controls)."""

import dagster as dg
import polars as pl

from bt_assets.assets import wiring as w
from bt_assets.config import Profile
from bt_assets.lib import onset_analysis as onset
from bt_assets.lib import selection


def build(profile: Profile) -> list:
    a, add_bos = profile.analysis, profile.model.add_bos
    variant = None if profile.analysis_variant == "all" else profile.analysis_variant

    @dg.asset(**w.cpu_asset("analysis"))
    def event_sample(
        model: w.HookedModel, baseline_events: pl.DataFrame
    ) -> dg.MaterializeResult[pl.DataFrame]:
        """BT events analysed by the teacher-forced stages: a seeded random sample across all problems
        (B19), plus position-matched non-BT controls scored on each event's own onset token (B7, B8).
        Positions index the sampled ids the model saw (``completion_token_ids``, carried through to the
        probes; only the tokenizer loads); events stored without them fall back to re-tokenised text."""
        ids = ["completion_token_ids"] if "completion_token_ids" in baseline_events.columns else []
        view = w.baseline(profile, baseline_events, variant, keep=("completion", "completion_tokens", *ids))
        df, n = onset.event_sample(view, a.max_events, a.event_seed, model.tokenizer if ids else None)
        note = selection.sample_note(n, a.event_seed, profile.analysis_variant)
        return w.materialized(
            profile,
            df,
            **n,
            event_seed=a.event_seed,
            detection_mode=profile.detection.mode,
            positions="stored_ids" if ids else "retokenised",
            note=note,
        )

    @dg.asset(**w.gpu_asset(profile, "analysis"))
    def logit_lens(
        model: w.HookedModel, event_sample: pl.DataFrame, prompts: pl.DataFrame
    ) -> dg.MaterializeResult[pl.DataFrame]:
        """Per layer: the onset token's logit and log-prob from the residual stream (final norm +
        unembedding), BT events vs position-matched controls, with mean, std and 95% interval."""
        bt, ctl = (
            onset.kind_probes(event_sample, k, prompts, model.tokenizer, add_bos) for k in ("bt", "control")
        )
        df = onset.logit_lens_table(model.model, bt, ctl)
        return w.materialized(profile, df, preview=w.table_md(df.select(df.columns[:7]), 40))

    @dg.asset(**w.gpu_asset(profile, "analysis"))
    def ablation_scan(
        context: dg.AssetExecutionContext,
        model: w.HookedModel,
        event_sample: pl.DataFrame,
        prompts: pl.DataFrame,
    ) -> dg.MaterializeResult[pl.DataFrame]:
        """For every (layer, component): change in the onset token's logit and log-prob when that
        component's output is scaled by ``analysis.scan_scale`` at the prediction position only."""
        n_layers = w.n_layers(profile, model)
        layers = list(range(n_layers)) if a.layers == "all" else a.layers
        events = onset.kind_probes(event_sample, "bt", prompts, model.tokenizer, add_bos)
        if not events:
            context.log.warning("no BT events: the scan is empty (every delta is NaN)")
        df = onset.ablation_scan_table(model.model, events, a.components, layers, a.scan_scale)
        cols = ["layer", "component", "delta_wait_logit_mean", "delta_logprob_mean", "n_events"]
        return w.materialized(profile, df, n_events=len(events), preview=w.table_md(df.head(12).select(cols)))

    @dg.asset(**w.cpu_asset("analysis"))
    def selected_layers(ablation_scan: pl.DataFrame) -> dg.MaterializeResult[dict]:
        """Top-k layers per component by the configured statistic (most negative first)."""
        sel = selection.select_layers(
            ablation_scan.drop_nans(), a.components, a.topk, a.statistic, a.require_negative
        )
        meta = {"statistic": a.statistic, "require_negative": a.require_negative, "selected": str(sel)}
        return w.materialized(profile, sel, **meta)

    # reads the layer count from the loaded model unless the profile states it: then a model asset (gpu pool)
    layer_count_asset = (
        w.cpu_asset("analysis") if profile.model.num_layers else w.gpu_asset(profile, "analysis")
    )

    @dg.asset(**layer_count_asset)
    def random_layers(model: w.HookedModel, selected_layers: dict) -> dg.MaterializeResult[dict]:
        """Shape-matched random layer sets from the non-selected layers of the WHOLE model (not only the
        scanned ``analysis.layers``), one per configured seed. The layer count is ``model.num_layers``
        when the profile sets it (the weights are not loaded), else the loaded model's decoder layers."""
        n_layers = profile.model.num_layers or w.n_layers(profile, model)
        out = selection.random_layers(selected_layers, n_layers, profile.ablation.random_seeds)
        return w.materialized(profile, out, n_layers=n_layers, sets=dg.MetadataValue.json(out))

    return [event_sample, logit_lens, ablation_scan, selected_layers, random_layers]
