"""Interventions stage (Phase 2): five families on one trade-off frontier, every cell decode-only and
paired with the baseline cell of the same run (same prompts, same counter-based sampling keys).

Kinds (``phase2.interventions``; ``bt_assets.lib.interventions``): ``scale`` (a subset's outputs x s),
``mean`` (a subset's outputs moved towards their baseline mean, weight w), ``heads`` (chosen heads'
context vectors x s), ``steer`` (alpha x the layer's mean activation norm x the unit difference of means
BT-onset vs control, added to the residual stream), ``token_ban`` (the trigger token family's logits
lowered by a penalty, "inf" = banned). Where their inputs come from: ``component_means`` (baseline
decode positions), ``steering_vectors`` (held-out AUC per layer), ``head_scan`` (single heads at the
onset position, the layer scan's method). One partition per (intervention, strength); any selection is
one run with one model load.
"""

import dagster as dg
import polars as pl

from bt_assets.assets import wiring as w
from bt_assets.config import Profile
from bt_assets.lib import component_means as cm
from bt_assets.lib import frontier, head_scan, steering
from bt_assets.lib import interventions as iv
from bt_assets.lib import onset_analysis as onset
from bt_assets.lib.hooks import HookState


def build(profile: Profile) -> list:
    p2, add_bos = profile.phase2, profile.model.add_bos
    cfgs = p2.interventions
    if not cfgs:
        return []
    kinds = {c.kind for c in cfgs}
    subsets = {s.name: s for s in p2.subsets}
    gen_store = w.store(profile, "intervention_generations", p2.samples_per_prompt)
    keys = iv.cell_keys(cfgs)
    info = iv.cell_table(cfgs)  # key, intervention, kind, strength, noop per cell
    all_cells = [dg.AssetDep("intervention_generations", partition_mapping=w.ALL)]

    def unused(schema: dict, kind: str) -> dg.MaterializeResult:
        return w.materialized(profile, pl.DataFrame(schema=schema), note=f"no {kind} intervention configured")

    @dg.asset(**w.gpu_asset(profile, "phase2"))
    def component_means(
        model: w.HookedModel, baseline_events: pl.DataFrame, prompts: pl.DataFrame
    ) -> dg.MaterializeResult[pl.DataFrame]:
        """Mean attention/MLP output per layer over the decode positions of a seeded sample of baseline
        completions of the Phase-2 variant (what mean ablation moves a component towards)."""
        if "mean" not in kinds:
            return unused(cm.MEANS_SCHEMA, "mean")
        cfg = p2.component_means
        keep = ("completion_token_ids", "finish_reason")
        rows = cm.sample_rows(
            w.baseline(profile, baseline_events, profile.phase2_variant, keep), cfg.max_completions, cfg.seed
        )
        spans = cm.spans_of(rows, prompts, model.tokenizer, add_bos)
        means, n_pos = cm.component_means(model.model, spans)
        df = cm.means_frame(means, n_pos, len(spans))
        return w.materialized(profile, df, n_positions=n_pos, n_completions=len(spans), seed=cfg.seed)

    @dg.asset(**w.gpu_asset(profile, "phase2"))
    def steering_vectors(
        model: w.HookedModel, event_sample: pl.DataFrame, prompts: pl.DataFrame
    ) -> dg.MaterializeResult[pl.DataFrame]:
        """Per layer: the unit difference of means of the residual stream at the position that predicts
        a BT onset vs position-matched controls (fit on training problems), its held-out AUC, and the
        layer's mean activation norm (the unit of a steering alpha)."""
        if "steer" not in kinds:
            return unused(steering.STEERING_SCHEMA, "steer")
        cfg = p2.steering
        bt, ctl = (
            onset.kind_probes(event_sample, k, prompts, model.tokenizer, add_bos) for k in ("bt", "control")
        )
        df = steering.steering_vectors(model.model, bt, ctl, cfg.heldout_fraction, cfg.seed)
        best = df.sort("auc_heldout", descending=True, nulls_last=True).row(0, named=True)
        meta = {"best_layer": best["layer"], "best_auc_heldout": best["auc_heldout"], "seed": cfg.seed}
        return w.materialized(profile, df, **meta)

    @dg.asset(**w.gpu_asset(profile, "phase2"))
    def head_scan_results(
        model: w.HookedModel, event_sample: pl.DataFrame, prompts: pl.DataFrame
    ) -> dg.MaterializeResult[pl.DataFrame]:
        """Per (layer, head): the onset token's logit change when that head's context vector is scaled by
        ``phase2.head_scan.scale`` at the onset prediction position only (teacher-forced, shared prefix)."""
        if not any(c.kind == "heads" and c.from_head_scan for c in cfgs):
            return w.materialized(profile, pl.DataFrame(), note="no heads intervention reads the head scan")
        cfg = p2.head_scan
        events = onset.kind_probes(event_sample, "bt", prompts, model.tokenizer, add_bos)
        df = head_scan.head_scan_table(
            model.model, events, None if cfg.layers == "all" else cfg.layers, cfg.scale
        )
        top = head_scan.select_heads(df, 8, cfg.statistic, cfg.require_negative)
        return w.materialized(profile, df, n_events=len(events), top_heads=str(top))

    def cells_of(
        model: w.HookedModel, prompts: pl.DataFrame, selected: dict, means, vectors, heads, only=None, *,
        check: bool = True,
    ):  # fmt: skip
        """The generation cells; ``check=False`` (reading stored cells) resolves them from the tokenizer
        and the upstream tables only, without loading the weights for the range checks."""
        hs = p2.head_scan
        ranking = (
            head_scan.select_heads(heads, None, hs.statistic, hs.require_negative) if heads.height else None
        )
        cells = iv.intervention_cells(
            cfgs, model=model.model if check else None, tokenizer=model.tokenizer, subsets=subsets,
            selected=selected, means=means if means.height else None,
            steering=vectors if vectors.height else None,
            head_ranking=ranking, default_triggers=profile.detection.triggers_strict,
        )  # fmt: skip
        return [
            iv.generation_cell(c, profile.phase2_variant, prompts)
            for c in cells
            if only is None or c.key in only
        ]

    ins = ("sweep_prompts", "selected_layers", "component_means", "steering_vectors", "head_scan_results")

    @dg.asset(**w.cells_asset(profile, "phase2", dg.StaticPartitionsDefinition(keys)))
    def intervention_generations(
        context: dg.AssetExecutionContext,
        model: w.HookedModel,
        sweep_prompts: pl.DataFrame,
        selected_layers: dict,
        component_means: pl.DataFrame,
        steering_vectors: pl.DataFrame,
        head_scan_results: pl.DataFrame,
    ) -> dg.MaterializeResult:
        """Completions per (intervention, strength) cell, all cells of the run decoding together with the
        baseline cell in condition-batched rows (decode-only; hook calls counted per cell)."""
        upstream = (component_means, steering_vectors, head_scan_results)
        cells = cells_of(model, sweep_prompts, selected_layers, *upstream, set(context.partition_keys))
        return w.generate(context, profile, model, gen_store, cells, sweep_prompts, HookState.empty())

    @dg.asset_check(**w.chunks_check(intervention_generations, *ins))
    def intervention_chunks_verify(
        context: dg.AssetCheckExecutionContext,
        model: w.HookedModel,
        sweep_prompts: pl.DataFrame,
        selected_layers: dict,
        component_means: pl.DataFrame,
        steering_vectors: pl.DataFrame,
        head_scan_results: pl.DataFrame,
    ):
        upstream = (component_means, steering_vectors, head_scan_results)
        cells = cells_of(model, sweep_prompts, selected_layers, *upstream, check=False)
        return w.verify_cells(context, gen_store, cells)

    @dg.asset(**w.cpu_asset("phase2", deps=all_cells))
    def intervention_events(
        model: w.HookedModel,
        problems: pl.DataFrame,
        sweep_prompts: pl.DataFrame,
        selected_layers: dict,
        component_means: pl.DataFrame,
        steering_vectors: pl.DataFrame,
        head_scan_results: pl.DataFrame,
    ) -> dg.MaterializeResult[pl.DataFrame]:
        """Detection and grading of every intervention completion against its own problem's gold (the
        cells' chunk fingerprints include the resolved vectors, heads and banned ids: the tokenizer and the
        upstream tables resolve them; the weights are not loaded)."""
        upstream = (component_means, steering_vectors, head_scan_results)
        gens = gen_store.read(cells_of(model, sweep_prompts, selected_layers, *upstream, check=False))
        ev = w.events_of(profile, model, gens, sweep_prompts, problems, keep_token_ids=True)
        return w.materialized(profile, ev, rows=ev.height)

    @dg.asset(**w.cpu_asset("phase2"))
    def intervention_results(intervention_events: pl.DataFrame) -> dg.MaterializeResult[pl.DataFrame]:
        """Every cell of every kind on the same axes: BT rate and accuracy (overall and among finished)
        with paired changes vs the baseline cell, mean tokens, truncation share, Pareto-optimal cells."""
        modes = (profile.detection.mode, profile.grading.mode)
        df = frontier.frontier_table(intervention_events, info, *modes, profile.run.seed)
        vs = frontier.versus_ban(df, intervention_events, *modes, profile.run.seed, profile.analysis.evidence)
        pareto = df.filter(pl.col("pareto"))["cell"].to_list()
        return w.materialized(
            profile, df, pareto=dg.MetadataValue.json(pareto), beats_ban=dg.MetadataValue.json(vs["beats"])
        )

    @dg.asset_check(
        asset=intervention_results, additional_ins={"intervention_events": dg.AssetIn("intervention_events")}
    )
    def noop_cells_equal_baseline(intervention_events: pl.DataFrame) -> dg.AssetCheckResult:
        """Every cell at its kind's no-op strength equals the baseline cell token for token."""
        noop = [c["key"] for c in info if c["noop"] and c["kind"] != "baseline"]
        base = intervention_events.filter(pl.col("condition") == iv.BASELINE_KEY).select(
            "example_id", "sample_id", "completion_token_ids"
        )
        rows = intervention_events.filter(pl.col("condition").is_in(noop)).join(
            base, on=["example_id", "sample_id"], suffix="_base"
        )
        bad = (
            int((rows["completion_token_ids"] != rows["completion_token_ids_base"]).sum())
            if rows.height
            else 0
        )
        return dg.AssetCheckResult(
            passed=bad == 0, metadata={"cells_checked": len(noop), "mismatched_rows": bad}
        )

    return [
        component_means,
        steering_vectors,
        head_scan_results,
        intervention_generations,
        intervention_chunks_verify,
        intervention_events,
        intervention_results,
        noop_cells_equal_baseline,
    ]
