"""Phase-2 stage: decode-only subset and scale sweeps (partitioned cells), their events and tables, and
hook statistics over whole cells (the onset-position stages are in ``onsets``)."""

import dagster as dg
import polars as pl

from bt_assets.assets import wiring as w
from bt_assets.config import Profile
from bt_assets.lib import sweep_stats
from bt_assets.lib.cells import sweep_cell
from bt_assets.lib.hooks import HookState
from bt_assets.lib.prompts import prompt_table


def build(profile: Profile) -> list:
    p2 = profile.phase2
    sweep = w.sweep_cell_list(profile)
    subsets = {s.name: s for s in p2.subsets}
    gen_store = w.store(profile, "sweep_generations", p2.samples_per_prompt)
    all_cells_dep = [dg.AssetDep("sweep_generations", partition_mapping=w.ALL)]

    def cells_of(prompts: pl.DataFrame, selected: dict, keys: list[str] | None = None) -> list:
        chosen = [c for c in sweep if keys is None or c.key in keys]
        return [sweep_cell(c, subsets, selected, profile.phase2_variant, prompts) for c in chosen]

    @dg.asset(**w.cpu_asset("phase2"))
    def sweep_prompts(model: w.HookedModel, problems: pl.DataFrame) -> dg.MaterializeResult[pl.DataFrame]:
        """Phase-2 prompts: the first ``phase2.n_problems`` problems in the Phase-1 format of the sweep
        variant (system prompt kept by default: the original dropped it, B11)."""
        style = w.prompt_style(profile, system_prompt=p2.use_system_prompt)
        subset = problems.sort("id").head(p2.n_problems)
        variant = w.variants(profile, [profile.phase2_variant])
        df = prompt_table(subset, variant, style, model.tokenizer, profile.model.add_bos)
        meta = {"variant": profile.phase2_variant, "system_prompt": p2.use_system_prompt}
        return w.materialized(profile, df, rows=df.height, **meta)

    @dg.asset(**w.cells_asset(profile, "phase2", w.sweep_partitions(profile)))
    def sweep_generations(
        context: dg.AssetExecutionContext,
        model: w.HookedModel,
        sweep_prompts: pl.DataFrame,
        selected_layers: dict,
    ) -> dg.MaterializeResult:
        """Phase-2 completions per sweep cell (subset x scale), decode-only ablation, all cells of the
        run decoding together in condition-batched rows; hook calls counted per cell and phase."""
        cells = cells_of(sweep_prompts, selected_layers, list(context.partition_keys))
        return w.generate(context, profile, model, gen_store, cells, sweep_prompts, HookState.empty())

    @dg.asset_check(**w.chunks_check(sweep_generations, "sweep_prompts", "selected_layers"))
    def sweep_chunks_verify(
        context: dg.AssetCheckExecutionContext, sweep_prompts: pl.DataFrame, selected_layers: dict
    ):
        return w.verify_cells(context, gen_store, cells_of(sweep_prompts, selected_layers))

    @dg.asset(**w.cpu_asset("phase2", deps=all_cells_dep))
    def sweep_events(
        model: w.HookedModel, problems: pl.DataFrame, sweep_prompts: pl.DataFrame, selected_layers: dict
    ) -> dg.MaterializeResult[pl.DataFrame]:
        """Detection and grading of every sweep completion, each against ITS OWN problem's gold (B6),
        with the sampled token ids (the scale-1.0 check compares them)."""
        gens = gen_store.read(cells_of(sweep_prompts, selected_layers))
        ev = w.events_of(profile, model, gens, sweep_prompts, problems, keep_token_ids=True)
        return w.materialized(profile, ev, rows=ev.height)

    @dg.asset(**w.cpu_asset("phase2"))
    def sweep_results(
        sweep_events: pl.DataFrame, sweep_prompts: pl.DataFrame, selected_layers: dict
    ) -> dg.MaterializeResult[dict]:
        """Subset and scale tables: BT rate and accuracy, mean length, truncation share, the paired change
        vs baseline (intervals: bootstrap over problems) and the best trade-off (a significant reduction
        that keeps accuracy above the floor, or why no cell is one)."""
        n_comp = {c.key: len(c.scales) for c in cells_of(sweep_prompts, selected_layers)}
        modes = (profile.detection.mode, profile.grading.mode)
        out = sweep_stats.sweep_tables(
            sweep_events,
            sweep,
            n_comp,
            *modes,
            p2.best_tradeoff_min_accuracy,
            profile.run.seed,
            profile.analysis.evidence,
        )
        meta = {k: w.table_md(pl.DataFrame(out[k])) for k in ("subset", "scale")}
        return w.materialized(
            profile, out, best_tradeoff=dg.MetadataValue.json(out["best_tradeoff"] or {}), **meta
        )

    @dg.asset_check(asset=sweep_results, additional_ins={"sweep_events": dg.AssetIn("sweep_events")})
    def scale_one_equals_baseline(sweep_events: pl.DataFrame) -> dg.AssetCheckResult:
        """Scale-1.0 cells equal the baseline cell token for token (hooks at 1.0 are exact no-ops)."""
        same = sweep_stats.scale_one_identical(sweep_events, sweep)
        return dg.AssetCheckResult(passed=same["passed"], metadata={k: str(v) for k, v in same.items()})

    @dg.asset_check(asset=sweep_results)
    def truncation_share(sweep_results: dict) -> dg.AssetCheckResult:
        """WARN when a cell's share of completions cut at the token cap exceeds the profile's limit."""
        shares = (r.get("truncated_share") for r in sweep_results["cells"])
        worst = max((x for x in shares if x is not None), default=0.0)
        passed = worst <= profile.analysis.truncation_warn_share
        return dg.AssetCheckResult(
            passed=passed, severity=dg.AssetCheckSeverity.WARN, metadata={"max_truncated_share": worst}
        )

    @dg.asset(**w.cpu_asset("phase2", deps=all_cells_dep))
    def hook_stats(sweep_prompts: pl.DataFrame, selected_layers: dict) -> dg.MaterializeResult[pl.DataFrame]:
        """Hook calls per cell, phase (prefill/decode) and component over the WHOLE cell (B12)."""
        df = gen_store.hook_counts(cells_of(sweep_prompts, selected_layers))
        return w.materialized(profile, df, preview=w.table_md(df, 30))

    @dg.asset_check(
        asset=hook_stats,
        additional_ins={
            "sweep_prompts": dg.AssetIn("sweep_prompts"),
            "selected_layers": dg.AssetIn("selected_layers"),
        },
    )
    def decode_only_hooks(
        hook_stats: pl.DataFrame, sweep_prompts: pl.DataFrame, selected_layers: dict
    ) -> dg.AssetCheckResult:
        """Ablated components are never applied during prefill and fire during decoding."""
        problems = sweep_stats.hook_problems(hook_stats, cells_of(sweep_prompts, selected_layers))
        return dg.AssetCheckResult(passed=not problems, metadata={"problems": "; ".join(problems) or "none"})

    return [
        sweep_prompts,
        sweep_generations,
        sweep_chunks_verify,
        sweep_events,
        sweep_results,
        scale_one_equals_baseline,
        truncation_share,
        hook_stats,
        decode_only_hooks,
    ]
