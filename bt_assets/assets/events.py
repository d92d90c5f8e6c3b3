"""Events stage (live runs): detection + grading of every stored completion, one row per completion.

Both detection/grading modes are computed side by side (the original's 17 columns, and the same with
``_corrected``); which one the analysis reads is the profile's ``detection.mode`` / ``grading.mode``.
"""

import dagster as dg
import polars as pl

from bt_assets.assets import wiring as w
from bt_assets.config import Profile
from bt_assets.lib.cells import baseline_cells

BT_COUNTS = {"bt_seed": "has_backtracking_strict", "bt_corrected": "has_backtracking_strict_corrected"}


def build(profile: Profile) -> list:
    samples = profile.generation.samples_per_prompt
    base_store = w.store(profile, "phase1_generations", samples)
    abl_store = w.store(profile, "ablation_generations", samples)
    abl_keys = w.ablation_keys(profile)

    @dg.asset(**w.cpu_asset("events", deps=[dg.AssetDep("phase1_generations", partition_mapping=w.ALL)]))
    def baseline_events(
        model: w.HookedModel, problems: pl.DataFrame, prompts: pl.DataFrame
    ) -> dg.MaterializeResult[pl.DataFrame]:
        """Detection (strict/relaxed onset, token position) and grading of every baseline completion, with
        its sampled ``completion_token_ids`` (the teacher-forced stages probe the ids the model saw)."""
        gens = base_store.read(baseline_cells(prompts, w.phase1_keys(profile)))
        df = w.events_of(profile, model, gens, prompts, problems, keep_token_ids=True)  # for the probes
        bt = {k: int(df[c].sum()) for k, c in BT_COUNTS.items()}
        modes = {"detection_mode": profile.detection.mode, "grading_mode": profile.grading.mode}
        return w.materialized(profile, df, rows=df.height, **modes, **bt)

    abl_deps = [dg.AssetDep("ablation_generations", partition_mapping=w.ALL)] if abl_keys else []

    @dg.asset(**w.cpu_asset("events", deps=abl_deps))
    def phase1_events(
        model: w.HookedModel,
        problems: pl.DataFrame,
        prompts: pl.DataFrame,
        baseline_events: pl.DataFrame,
        selected_layers: dict,
        random_layers: dict,
    ) -> dg.MaterializeResult[pl.DataFrame]:
        """Events of every Phase-1 cell: the baseline events plus those of the ablation cells."""
        cells = w.ablation_cells(profile, prompts, abl_keys, selected_layers, random_layers)
        ablated = w.events_of(profile, model, abl_store.read(cells), prompts, problems, keep_token_ids=True)
        df = pl.concat([baseline_events, ablated], how="diagonal_relaxed")
        counts = df.group_by("variant", "condition", maintain_order=True).len()
        return w.materialized(profile, df, rows=df.height, cells=w.table_md(counts))

    return [baseline_events, phase1_events]
