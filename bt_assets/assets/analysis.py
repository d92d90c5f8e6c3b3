"""Phase 1 analysis: event sample, logit lens, ablation scan, selected and random layers."""

import dagster as dg
import polars as pl
import torch

from bt_assets.assets.common import GPU_KINDS, provenance_metadata, table_md
from bt_assets.assets.events import analysis_view
from bt_assets.config import Profile
from bt_assets.lib import selection, teacher
from bt_assets.lib.hooks import decoder_layers
from bt_assets.lib.stats import mean_interval
from bt_assets.lib.teacher import Event, encode_full
from bt_assets.resources import HookedModel


def probes(
    rows: pl.DataFrame,
    prompts: pl.DataFrame,
    tokenizer,
    add_bos: bool,
    pred_pos: str = "pred_pos_in_full",
    target: str = "onset_token_id",
) -> list[Event]:
    """Teacher-forced probes for event (or control) rows that carry ``completion``."""
    text = {(r["variant"], r["example_id"]): r["prompt"] for r in prompts.iter_rows(named=True)}
    out = []
    for r in rows.iter_rows(named=True):
        ids = encode_full(tokenizer, text[(r["variant"], r["example_id"])], r["completion"], add_bos)
        if 0 <= r[pred_pos] < len(ids):
            key = f"{r['variant']}/{r['example_id']}/{r['sample_id']}"
            out.append(Event(key, ids, int(r[pred_pos]), int(r[target])))
    return out


def build(profile: Profile) -> list:
    a, det_mode, grd_mode = profile.analysis, profile.detection.mode, profile.grading.mode
    variant = profile.analysis_variant

    @dg.asset(group_name="analysis", kinds={"polars"})
    def event_sample(context: dg.AssetExecutionContext, baseline_events: pl.DataFrame) -> pl.DataFrame:
        """BT events analysed by the teacher-forced stages: a seeded random sample across all problems
        (B19), plus position-matched non-BT controls scored on each event's own onset token (B7, B8)."""
        view = analysis_view(baseline_events, det_mode, grd_mode).with_columns(
            baseline_events["completion"], baseline_events["completion_tokens"]
        )
        view = view.filter(pl.col("condition") == "baseline")
        if variant != "all":
            view = view.filter(pl.col("variant") == variant)
        bt = view.filter(pl.col("has_backtracking_strict") & (pl.col("pred_pos_in_full") >= 0))
        events = selection.sample_events(bt, a.max_events, a.event_seed)
        controls = selection.match_controls(
            events, view.filter(~pl.col("has_backtracking_strict")), a.event_seed
        )
        ctl_rows = controls.join(
            view.select("example_id", "sample_id", "variant", "completion"),
            left_on=["control_variant", "control_example_id", "control_sample_id"],
            right_on=["variant", "example_id", "sample_id"],
            how="left",
        )
        out = pl.concat(
            [
                events.select(
                    "example_id",
                    "sample_id",
                    "variant",
                    "completion",
                    pl.col("pred_pos_in_full").alias("pred_pos"),
                    pl.col("onset_token_id").alias("target"),
                    pl.col("onset_token_text"),
                    pl.lit("bt").alias("kind"),
                ),
                ctl_rows.select(
                    pl.col("control_example_id").alias("example_id"),
                    pl.col("control_sample_id").alias("sample_id"),
                    pl.col("control_variant").alias("variant"),
                    "completion",
                    "pred_pos",
                    "target",
                    pl.lit(None, pl.String).alias("onset_token_text"),
                    pl.lit("control").alias("kind"),
                ),
            ],
            how="vertical_relaxed",
        )
        msg = (
            (
                f"{events.height} of {bt.height} BT events sampled (seed {a.event_seed}), "
                f"{ctl_rows.height} controls"
            )
            if bt.height
            else f"no BT events in the baseline of variant {variant} ({view.height} completions): "
            "analysis stages will be empty"
        )
        context.log.info(msg)
        context.add_output_metadata(
            provenance_metadata(
                profile,
                n_bt=events.height,
                n_control=ctl_rows.height,
                bt_available=bt.height,
                event_seed=a.event_seed,
                detection_mode=det_mode,
                note=msg,
                problems_covered=events["example_id"].n_unique() if events.height else 0,
            )
        )
        return out

    @dg.asset(group_name="analysis", kinds=GPU_KINDS, pool="gpu", op_tags=profile.k8s_gpu_op_tags())
    def logit_lens(
        context: dg.AssetExecutionContext,
        model: HookedModel,
        event_sample: pl.DataFrame,
        prompts: pl.DataFrame,
    ) -> pl.DataFrame:
        """Per layer: the onset token's logit and log-prob from the residual stream (final norm +
        unembedding), BT events vs position-matched controls, with mean, std and 95% interval."""
        n_layers = len(decoder_layers(model.model))
        rows = []
        res = {}
        for kind in ("bt", "control"):
            ev = probes(
                event_sample.filter(pl.col("kind") == kind),
                prompts,
                model.tokenizer,
                profile.model.add_bos,
                "pred_pos",
                "target",
            )
            res[kind] = teacher.logit_lens(model.model, ev) if ev else torch.empty(0, n_layers, 2)
        for layer in range(n_layers):
            row = {"layer": layer}
            for kind, name in (("bt", "bt"), ("control", "control")):
                lg = mean_interval(res[kind][:, layer, 0].tolist())
                lp = mean_interval(res[kind][:, layer, 1].tolist())
                row |= {
                    f"mean_target_logit_{name}": lg[0],
                    f"std_{name}": lg[1],
                    f"ci_low_{name}": lg[2],
                    f"ci_high_{name}": lg[3],
                    f"mean_target_logprob_{name}": lp[0],
                    f"std_logprob_{name}": lp[1],
                    f"n_{name}": res[kind].shape[0],
                }
            rows.append(row)
        df = pl.DataFrame(rows).with_columns(pl.lit("position_matched_own_token").alias("control_matching"))
        first = [
            "layer",
            "mean_target_logit_bt",
            "mean_target_logit_control",
            "std_bt",
            "std_control",
            "n_bt",
            "n_control",
            "control_matching",
        ]
        df = df.select(first + [c for c in df.columns if c not in first])
        context.add_output_metadata(provenance_metadata(profile, preview=table_md(df.select(first[:7]), 40)))
        return df

    @dg.asset(group_name="analysis", kinds=GPU_KINDS, pool="gpu", op_tags=profile.k8s_gpu_op_tags())
    def ablation_scan(
        context: dg.AssetExecutionContext,
        model: HookedModel,
        event_sample: pl.DataFrame,
        prompts: pl.DataFrame,
    ) -> pl.DataFrame:
        """For every (layer, component): change in the onset token's logit and log-prob when that
        component's output is scaled by ``analysis.scan_scale`` at the prediction position only."""
        n_layers = len(decoder_layers(model.model))
        profile.check_layers(n_layers)  # ConfigError naming analysis.layers.N (and any other bad layer key)
        layers = list(range(n_layers)) if a.layers == "all" else a.layers
        table, variants = teacher.single_component_table(n_layers, a.components, layers, a.scan_scale)
        events = probes(
            event_sample.filter(pl.col("kind") == "bt"),
            prompts,
            model.tokenizer,
            profile.model.add_bos,
            "pred_pos",
            "target",
        )
        deltas = torch.empty(len(events), len(variants), 2)
        for i, ev in enumerate(events):
            logit, logp, _ = teacher.target_stats(teacher.score_at_onset(model.model, ev, table), ev.target)
            deltas[i, :, 0] = (logit[1:] - logit[0]).cpu()
            deltas[i, :, 1] = (logp[1:] - logp[0]).cpu()
        rows = []
        for v, (comp, layer) in enumerate(variants):
            lg, lp = mean_interval(deltas[:, v, 0].tolist()), mean_interval(deltas[:, v, 1].tolist())
            rows.append(
                {
                    "layer": layer,
                    "component": comp,
                    "delta_wait_logit_mean": lg[0],
                    "delta_wait_logit_std": lg[1],
                    "n_events": len(events),
                    "delta_logit_mean": lg[0],
                    "delta_logit_ci_low": lg[2],
                    "delta_logit_ci_high": lg[3],
                    "delta_logprob_mean": lp[0],
                    "delta_logprob_std": lp[1],
                    "delta_logprob_ci_low": lp[2],
                    "delta_logprob_ci_high": lp[3],
                    "scale": a.scan_scale,
                }
            )
        df = pl.DataFrame(rows).sort("delta_wait_logit_mean", "layer", "component", nulls_last=True)
        if not events:
            context.log.warning("no BT events: the scan is empty (every delta is NaN)")
        context.add_output_metadata(
            provenance_metadata(
                profile,
                n_events=len(events),
                preview=table_md(
                    df.head(12).select(
                        "layer", "component", "delta_wait_logit_mean", "delta_logprob_mean", "n_events"
                    )
                ),
            )
        )
        return df

    @dg.asset(group_name="analysis", kinds={"polars"})
    def selected_layers(context: dg.AssetExecutionContext, ablation_scan: pl.DataFrame) -> dict:
        """Top-k layers per component by the configured statistic (most negative first)."""
        sel = selection.select_layers(
            ablation_scan.drop_nans(), a.components, a.topk, a.statistic, a.require_negative
        )
        context.add_output_metadata(
            provenance_metadata(
                profile, statistic=a.statistic, require_negative=a.require_negative, selected=str(sel)
            )
        )
        return sel

    @dg.asset(group_name="analysis", kinds={"polars"})
    def random_layers(
        context: dg.AssetExecutionContext, ablation_scan: pl.DataFrame, selected_layers: dict
    ) -> dict:
        """Shape-matched random layer sets from the non-selected layers, one per configured seed."""
        n_layers = int(ablation_scan["layer"].max()) + 1
        out = selection.random_layers(selected_layers, n_layers, profile.ablation.random_seeds)
        context.add_output_metadata(provenance_metadata(profile, sets=dg.MetadataValue.json(out)))
        return out

    return [event_sample, logit_lens, ablation_scan, selected_layers, random_layers]
