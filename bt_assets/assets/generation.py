"""Generation stage: sampled Phase-1 completions per (variant, condition) cell, in resumable chunks.

Baseline cells are unhooked; ablation cells scale the selected (targeted) or random layers'
attention/MLP outputs at every decode step (decode-only: the prompt prefill is intact). Ablation cells
are their own asset because their layers come from ``selected_layers``, computed from the baseline.
"""

import dagster as dg
import polars as pl

from bt_assets.assets import wiring as w
from bt_assets.config import Profile
from bt_assets.lib.cells import baseline_cells


def build(profile: Profile) -> list:
    samples = profile.generation.samples_per_prompt
    base_store = w.store(profile, "phase1_generations", samples)
    abl_store = w.store(profile, "ablation_generations", samples)
    abl_keys = w.ablation_keys(profile)

    @dg.asset(**w.cells_asset(profile, "generation", w.phase1_partitions(profile)))
    def phase1_generations(
        context: dg.AssetExecutionContext, model: w.HookedModel, prompts: pl.DataFrame
    ) -> dg.MaterializeResult:
        """Sampled baseline completions per (variant, condition) cell: tokens, true length, finish reason."""
        cells = baseline_cells(prompts, list(context.partition_keys))
        return w.generate(context, profile, model, base_store, cells, prompts)

    @dg.asset_check(**w.chunks_check(phase1_generations, "prompts"))
    def phase1_chunks_verify(context: dg.AssetCheckExecutionContext, prompts: pl.DataFrame):
        return w.verify_cells(context, base_store, baseline_cells(prompts, w.phase1_keys(profile)))

    if not abl_keys:
        return [phase1_generations, phase1_chunks_verify]

    @dg.asset(**w.cells_asset(profile, "generation", dg.StaticPartitionsDefinition(abl_keys)))
    def ablation_generations(
        context: dg.AssetExecutionContext,
        model: w.HookedModel,
        prompts: pl.DataFrame,
        selected_layers: dict,
        random_layers: dict,
    ) -> dg.MaterializeResult:
        """Phase-1 completions with the selected (targeted) or random layers' attn/MLP outputs scaled by
        ``ablation.scale`` at every decode step (decode-only: the prompt prefill is intact)."""
        cells = w.ablation_cells(
            profile, prompts, list(context.partition_keys), selected_layers, random_layers
        )
        meta = {"targeted": str(selected_layers), "random": str(random_layers)}
        return w.generate(context, profile, model, abl_store, cells, prompts, **meta)

    @dg.asset_check(**w.chunks_check(ablation_generations, "prompts", "selected_layers", "random_layers"))
    def ablation_chunks_verify(
        context: dg.AssetCheckExecutionContext,
        prompts: pl.DataFrame,
        selected_layers: dict,
        random_layers: dict,
    ):
        cells = w.ablation_cells(profile, prompts, abl_keys, selected_layers, random_layers)
        return w.verify_cells(context, abl_store, cells)

    return [phase1_generations, phase1_chunks_verify, ablation_generations, ablation_chunks_verify]
