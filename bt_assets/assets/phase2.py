"""Phase 2: decode-only subset and scale sweeps (partitioned), sweep tables, hook statistics,
continuation ablation at the onset position."""

import dagster as dg
import polars as pl
import torch

from bt_assets.assets.analysis import probes
from bt_assets.assets.common import (
    GPU_KINDS,
    model_identity,
    provenance_metadata,
    sampling_config,
    table_md,
)
from bt_assets.assets.events import golds_of
from bt_assets.assets.phase1 import generate_cells, verify_chunks
from bt_assets.config import Profile
from bt_assets.lib import sweep_stats, teacher
from bt_assets.lib.events import events_from_generations
from bt_assets.lib.generation import Cell, read_cell, read_hook_counts
from bt_assets.lib.hooks import COMPONENTS, HookState, decoder_layers
from bt_assets.lib.prompts import PromptStyle, Variant, prompt_table
from bt_assets.lib.sweeps import check_layers, subset_components
from bt_assets.partitions import sweep_cell_list, sweep_partitions
from bt_assets.resources import HookedModel

ALL = dg.AllPartitionMapping()


def build(profile: Profile) -> list:
    p2 = profile.phase2
    cells_by_key = {c.key: c for c in sweep_cell_list(profile)}
    subsets = {s.name: s for s in p2.subsets}
    g = profile.generation

    def cell_of(key: str, prompts: pl.DataFrame, selected: dict) -> Cell:
        sc = cells_by_key[key]
        comps = [] if sc.subset == "baseline" else subset_components(subsets[sc.subset], selected)
        scales = {} if sc.scale == 1.0 and sc.subset == "baseline" else {c: sc.scale for c in comps}
        return Cell(key=key, variant=profile.phase2_variant, condition=key, prompts=prompts, scales=scales)

    @dg.asset(group_name="phase2", kinds={"polars"})
    def sweep_prompts(
        context: dg.AssetExecutionContext, model: HookedModel, problems: pl.DataFrame
    ) -> pl.DataFrame:
        """Phase-2 prompts: the first ``phase2.n_problems`` problems in the Phase-1 format of the sweep
        variant (system prompt kept by default: the original dropped it, B11)."""
        p = profile.prompting
        v = next(v for v in p.variants if v.name == profile.phase2_variant)
        style = PromptStyle(
            template=p.template,
            system_prompt=p.system_prompt if p2.use_system_prompt else None,
            chat_template=p.chat_template,
            mode=p.mode,
        )
        subset = problems.sort("id").head(p2.n_problems)
        df = prompt_table(
            subset,
            [Variant(v.name, v.think_open, v.think_close, tuple(v.drop_lines))],
            style,
            model.tokenizer,
            add_special_tokens=profile.model.add_bos,
        )
        context.add_output_metadata(
            provenance_metadata(profile, rows=df.height, variant=v.name, system_prompt=p2.use_system_prompt)
        )
        return df

    @dg.asset(
        group_name="phase2",
        kinds=GPU_KINDS,
        pool="gpu",
        op_tags=profile.k8s_gpu_op_tags(),
        partitions_def=sweep_partitions(profile),
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def sweep_generations(
        context: dg.AssetExecutionContext,
        model: HookedModel,
        sweep_prompts: pl.DataFrame,
        selected_layers: dict,
    ) -> dg.MaterializeResult:
        """Phase-2 completions per sweep cell (subset x scale), decode-only ablation, all cells of the
        run decoding together in condition-batched rows; hook calls counted per cell and phase."""
        n_layers = len(decoder_layers(model.model))
        profile.check_layers(n_layers)  # configured layers first: the error names phase2.subsets.N...
        cells = [cell_of(k, sweep_prompts, selected_layers) for k in context.partition_keys]
        for c in cells:
            check_layers(list(c.scales), n_layers, f"phase2 cell {c.key}")
        reports = generate_cells(
            context,
            profile,
            model,
            cells,
            "sweep_generations",
            p2.samples_per_prompt,
            sweep_prompts,
            hook_state=HookState.empty(),
        )
        return dg.MaterializeResult(
            metadata=provenance_metadata(
                profile, cells=len(reports), rows=sum(r.rows for r in reports.values())
            )
        )

    @dg.asset_check(
        asset=sweep_generations,
        name="chunks_verify",
        blocking=True,
        additional_ins={
            "sweep_prompts": dg.AssetIn("sweep_prompts"),
            "selected_layers": dg.AssetIn("selected_layers"),
        },
    )
    def sweep_chunks_verify(
        context: dg.AssetCheckExecutionContext, sweep_prompts: pl.DataFrame, selected_layers: dict
    ):
        """Materialized cells are intact: manifest present, every chunk file with its recorded sha256."""
        cells = [cell_of(k, sweep_prompts, selected_layers) for k in cells_by_key]
        return verify_chunks(context, profile, cells, "sweep_generations", p2.samples_per_prompt)

    def read_sweep(prompts: pl.DataFrame, selected: dict) -> tuple[list[Cell], pl.DataFrame]:
        cells = [cell_of(k, prompts, selected) for k in cells_by_key]
        gens = pl.concat(
            [
                read_cell(
                    profile.path("storage") / "sweep_generations",
                    c,
                    model_identity(profile),
                    sampling_config(profile),
                    p2.samples_per_prompt,
                    g.chunk_problems,
                )
                for c in cells
            ]
        )
        return cells, gens

    @dg.asset(
        group_name="phase2", kinds={"polars"}, deps=[dg.AssetDep("sweep_generations", partition_mapping=ALL)]
    )
    def sweep_events(
        context: dg.AssetExecutionContext,
        model: HookedModel,
        problems: pl.DataFrame,
        sweep_prompts: pl.DataFrame,
        selected_layers: dict,
    ) -> pl.DataFrame:
        """Detection and grading of every sweep completion, each against ITS OWN problem's gold (B6)."""
        _, gens = read_sweep(sweep_prompts, selected_layers)
        det = profile.detection
        ev = events_from_generations(
            gens,
            sweep_prompts,
            golds_of(problems),
            model.tokenizer,
            det.triggers_strict,
            det.triggers_relaxed,
            profile.model.add_bos,
            det.answer_regex,
        )
        ev = ev.with_columns(gens["completion_token_ids"])
        context.add_output_metadata(provenance_metadata(profile, rows=ev.height))
        return ev

    @dg.asset(
        group_name="phase2",
        kinds={"polars"},
        check_specs=[
            dg.AssetCheckSpec("scale_one_equals_baseline", asset="sweep_results"),
            dg.AssetCheckSpec("truncation_share", asset="sweep_results"),
        ],
    )
    def sweep_results(
        context: dg.AssetExecutionContext,
        sweep_events: pl.DataFrame,
        sweep_prompts: pl.DataFrame,
        selected_layers: dict,
    ):
        """Subset and scale tables: BT rate and accuracy with Wilson intervals, mean length, truncation
        share, the paired change vs baseline (bootstrap over problems) and the best trade-off."""
        n_comp = {k: len(cell_of(k, sweep_prompts, selected_layers).scales) for k in cells_by_key}
        out = sweep_stats.sweep_tables(
            sweep_events,
            list(cells_by_key.values()),
            n_comp,
            profile.detection.mode,
            profile.grading.mode,
            p2.best_tradeoff_min_accuracy,
            profile.run.seed,
        )
        meta = {
            "subset_table": table_md(pl.DataFrame(out["subset"])),
            "scale_table": table_md(pl.DataFrame(out["scale"])),
            "best_tradeoff": dg.MetadataValue.json(out["best_tradeoff"] or {}),
        }
        yield dg.Output(out, metadata=provenance_metadata(profile, **meta))
        same = sweep_stats.scale_one_identical(sweep_events, list(cells_by_key.values()))
        yield dg.AssetCheckResult(
            check_name="scale_one_equals_baseline",
            passed=same["passed"],
            metadata={k: str(v) for k, v in same.items()},
        )
        worst = max((r["truncated_share"] for r in out["cells"]), default=0.0)
        yield dg.AssetCheckResult(
            check_name="truncation_share",
            passed=worst <= profile.phase1.truncation_warn_share,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"max_truncated_share": worst},
        )

    @dg.asset(
        group_name="phase2",
        kinds={"polars"},
        deps=[dg.AssetDep("sweep_generations", partition_mapping=ALL)],
        check_specs=[dg.AssetCheckSpec("decode_only_hooks", asset="hook_stats")],
    )
    def hook_stats(context: dg.AssetExecutionContext, sweep_prompts: pl.DataFrame, selected_layers: dict):
        """Hook calls per cell, phase (prefill/decode) and component over the WHOLE cell (B12)."""
        cells = [cell_of(k, sweep_prompts, selected_layers) for k in cells_by_key]
        df = read_hook_counts(
            profile.path("storage") / "sweep_generations",
            cells,
            model_identity(profile),
            sampling_config(profile),
            p2.samples_per_prompt,
            g.chunk_problems,
        )
        yield dg.Output(df, metadata=provenance_metadata(profile, preview=table_md(df, 30)))
        problems_found = sweep_stats.hook_problems(df, cells)
        yield dg.AssetCheckResult(
            check_name="decode_only_hooks",
            passed=not problems_found,
            metadata={"problems": "; ".join(problems_found) or "none"},
        )

    @dg.asset(group_name="phase2", kinds=GPU_KINDS, pool="gpu", op_tags=profile.k8s_gpu_op_tags())
    def continuation_ablation(
        context: dg.AssetExecutionContext,
        model: HookedModel,
        event_sample: pl.DataFrame,
        prompts: pl.DataFrame,
        selected_layers: dict,
    ) -> pl.DataFrame:
        """Teacher-forced at the onset prediction position: P(onset token) and its logit clean and with
        the subset scaled at that position only, per scale; the top tokens after ablation and whether a
        synonym trigger replaces the onset (the original's stage measured nothing: B13)."""
        cfg = p2.continuation
        if cfg is None:
            return pl.DataFrame()
        n_layers = len(decoder_layers(model.model))
        profile.check_layers(n_layers)
        comps = subset_components(subsets[cfg.subset], selected_layers)
        check_layers(comps, n_layers, f"phase2.continuation.subset {cfg.subset}")
        table = torch.ones(1 + len(cfg.scales), n_layers, len(COMPONENTS))
        for r, s in enumerate(cfg.scales, start=1):
            for comp, layer in comps:
                table[r, layer, COMPONENTS.index(comp)] = s
        bt = event_sample.filter(pl.col("kind") == "bt").head(cfg.max_events)
        events = probes(bt, prompts, model.tokenizer, profile.model.add_bos, "pred_pos", "target")
        rows = teacher.continuation_rows(
            model.model,
            model.tokenizer,
            events,
            table,
            [1.0, *cfg.scales],
            cfg.top_tokens,
            cfg.synonyms,
            cfg.subset,
        )
        df = pl.DataFrame(rows) if rows else teacher.empty_continuation()
        context.add_output_metadata(
            provenance_metadata(
                profile,
                n_events=len(events),
                subset=cfg.subset,
                components=str(comps),
                summary=table_md(sweep_stats.continuation_summary(df)),
            )
        )
        return df

    return [
        sweep_prompts,
        sweep_generations,
        sweep_chunks_verify,
        sweep_events,
        sweep_results,
        hook_stats,
        continuation_ablation,
    ]
