"""Phase 1 generations: sampled completions per (variant, condition) cell, resumable chunks on disk."""

import dagster as dg
import polars as pl

from bt_assets.assets.common import (
    GPU_KINDS,
    model_identity,
    phase1_cells,
    provenance,
    provenance_metadata,
    sampling_config,
)
from bt_assets.config import Profile
from bt_assets.lib.generation import Cell, CellReport, run_cells, verify_cell
from bt_assets.lib.hooks import HookState, decoder_layers
from bt_assets.partitions import ablation_keys, parse_cell_key, phase1_keys, phase1_partitions
from bt_assets.resources import HookedModel


def generate_cells(
    context: dg.AssetExecutionContext,
    profile: Profile,
    model: HookedModel,
    cells: list[Cell],
    asset_name: str,
    samples: int,
    prompt_table: pl.DataFrame,
    hook_state: HookState | None = None,
) -> dict[str, CellReport]:
    """Generate every cell of this run together and attach per-partition metadata. Prompts are padded to
    the longest of ``prompt_table`` (all cells of the asset), so outputs do not depend on the run's cells."""
    profile.check_layers(len(decoder_layers(model.model)))  # fail before any decoding, naming the key
    g = profile.generation
    reports = run_cells(
        model.model,
        model.tokenizer,
        cells,
        store_root=profile.path("storage") / asset_name,
        sampling=sampling_config(profile),
        samples=samples,
        chunk_problems=g.chunk_problems,
        batch_size=g.batch_size,
        eos_ids=model.eos_ids(),
        add_bos=profile.model.add_bos,
        identity=model_identity(profile),
        provenance=provenance(profile),
        hook_state=hook_state,
        log=context.log.info,
        progress=context.log.info,  # rows done, tok/s, ETA: after the first batch, then every ~10 s
        prompt_width=int(prompt_table["prompt_tokens"].max() or 0),
    )
    for key, rep in reports.items():
        context.add_asset_metadata(
            {
                "profile_hash": profile.config_hash(),
                "rows": rep.rows,
                "new_rows": rep.new_rows,
                "chunks_reused": rep.chunks_reused,
                "chunks_written": rep.chunks_written,
                "chunks_discarded": rep.chunks_discarded,
                "tokens_per_s": round(rep.tokens_per_s, 1),
                "new_tokens": rep.new_tokens,
                "generation_seconds": round(rep.seconds, 2),
                "share_truncated": round(rep.truncated / rep.rows, 4) if rep.rows else 0.0,
                "path": dg.MetadataValue.path(rep.path),
            },
            partition_key=key,
        )
    return reports


def verify_chunks(
    context: dg.AssetCheckExecutionContext, profile: Profile, cells: list[Cell], asset_name: str, samples: int
) -> dg.AssetCheckResult:
    """Every materialized cell of ``asset_name`` is intact on disk: a manifest of its current fingerprint,
    each chunk present with the recorded size and sha256 (cells never materialized are skipped)."""
    done = set(context.instance.get_materialized_partitions(dg.AssetKey(asset_name)))
    checked = [c for c in cells if c.key in done]
    problems = {
        c.key: p
        for c in checked
        if (
            p := verify_cell(
                profile.path("storage") / asset_name,
                c,
                model_identity(profile),
                sampling_config(profile),
                samples,
                profile.generation.chunk_problems,
            )
        )
    }
    text = "\n".join(f"{key}: {msg}" for key, msgs in problems.items() for msg in msgs)
    return dg.AssetCheckResult(
        passed=not problems,
        description=f"{len(problems)} of {len(checked)} cells corrupt or incomplete:\n{text}"
        if problems
        else None,
        metadata={
            "cells_checked": len(checked),
            "cells_bad": dg.MetadataValue.json(sorted(problems)),
            "problems": dg.MetadataValue.md(text.replace("\n", "  \n") or "none"),
        },
    )


def build(profile: Profile) -> list:
    @dg.asset(
        group_name="phase1",
        kinds=GPU_KINDS,
        pool="gpu",
        op_tags=profile.k8s_gpu_op_tags(),
        partitions_def=phase1_partitions(profile),
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def phase1_generations(
        context: dg.AssetExecutionContext, model: HookedModel, prompts: pl.DataFrame
    ) -> dg.MaterializeResult:
        """Sampled baseline completions per (variant, condition) cell: tokens, true length, finish reason."""
        cells = phase1_cells(profile, prompts, list(context.partition_keys))
        reports = generate_cells(
            context,
            profile,
            model,
            cells,
            "phase1_generations",
            profile.generation.samples_per_prompt,
            prompts,
        )
        return dg.MaterializeResult(
            metadata=provenance_metadata(
                profile, cells=len(reports), rows=sum(r.rows for r in reports.values())
            )
        )

    samples = profile.generation.samples_per_prompt

    @dg.asset_check(
        asset=phase1_generations,
        name="chunks_verify",
        blocking=True,
        additional_ins={"prompts": dg.AssetIn("prompts")},
    )
    def phase1_chunks_verify(context: dg.AssetCheckExecutionContext, prompts: pl.DataFrame):
        """Materialized cells are intact: manifest present, every chunk file with its recorded sha256."""
        cells = phase1_cells(profile, prompts, phase1_keys(profile))
        return verify_chunks(context, profile, cells, "phase1_generations", samples)

    abl_keys = ablation_keys(profile)
    if not abl_keys:
        return [phase1_generations, phase1_chunks_verify]

    @dg.asset(
        group_name="phase1",
        kinds=GPU_KINDS,
        pool="gpu",
        op_tags=profile.k8s_gpu_op_tags(),
        partitions_def=dg.StaticPartitionsDefinition(abl_keys),
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def ablation_generations(
        context: dg.AssetExecutionContext,
        model: HookedModel,
        prompts: pl.DataFrame,
        selected_layers: dict,
        random_layers: dict,
    ) -> dg.MaterializeResult:
        """Phase-1 completions with the selected (targeted) or random layers' attn/MLP outputs scaled by
        ``ablation.scale`` at every decode step (decode-only: the prompt prefill is intact)."""
        cells = ablation_cells(profile, prompts, list(context.partition_keys), selected_layers, random_layers)
        for c in cells:
            context.log.info(f"{c.key}: {len(c.scales)} components scaled: {sorted(c.scales)}")
        reports = generate_cells(
            context,
            profile,
            model,
            cells,
            "ablation_generations",
            profile.generation.samples_per_prompt,
            prompts,
        )
        return dg.MaterializeResult(
            metadata=provenance_metadata(
                profile,
                cells=len(reports),
                rows=sum(r.rows for r in reports.values()),
                targeted=str(selected_layers),
                random=str(random_layers),
            )
        )

    @dg.asset_check(
        asset=ablation_generations,
        name="chunks_verify",
        blocking=True,
        additional_ins={
            "prompts": dg.AssetIn("prompts"),
            "selected_layers": dg.AssetIn("selected_layers"),
            "random_layers": dg.AssetIn("random_layers"),
        },
    )
    def ablation_chunks_verify(
        context: dg.AssetCheckExecutionContext,
        prompts: pl.DataFrame,
        selected_layers: dict,
        random_layers: dict,
    ):
        """Materialized cells are intact: manifest present, every chunk file with its recorded sha256."""
        cells = ablation_cells(profile, prompts, abl_keys, selected_layers, random_layers)
        return verify_chunks(context, profile, cells, "ablation_generations", samples)

    return [phase1_generations, phase1_chunks_verify, ablation_generations, ablation_chunks_verify]


def condition_scales(profile: Profile, condition: str, selected: dict, random_sets: dict) -> dict:
    """(component, layer) -> scale for an ablation condition (the first random seed's layer set)."""
    layers = (
        selected if condition == "targeted_ablation" else random_sets[str(profile.ablation.random_seeds[0])]
    )
    scale = 0.0 if profile.ablation.mode == "zero" else profile.ablation.scale
    return {(comp, int(layer)): scale for comp, ls in layers.items() for layer in ls}


def ablation_cells(
    profile: Profile, prompts: pl.DataFrame, keys: list[str], selected: dict, random_sets: dict
) -> list[Cell]:
    cells = []
    for key in keys:
        parts = parse_cell_key(key)
        cells.append(
            Cell(
                key=key,
                variant=parts["variant"],
                condition=parts["condition"],
                prompts=prompts.filter(pl.col("variant") == parts["variant"]),
                scales=condition_scales(profile, parts["condition"], selected, random_sets),
            )
        )
    return cells
