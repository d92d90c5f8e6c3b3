"""Events and metrics: detection + grading per completion, the original's tables, corrected metrics."""

import dagster as dg
import polars as pl

from bt_assets.assets.common import (
    model_identity,
    phase1_cells,
    provenance_metadata,
    sampling_config,
    table_md,
)
from bt_assets.assets.phase1 import ablation_cells
from bt_assets.config import Profile, resolve_path
from bt_assets.lib import metrics as M
from bt_assets.lib.events import events_from_generations, imported_events
from bt_assets.lib.generation import read_cell
from bt_assets.lib.rates import bt_accuracy_summary
from bt_assets.partitions import ablation_keys, phase1_keys
from bt_assets.resources import HookedModel

ALL = dg.AllPartitionMapping()


def analysis_view(events: pl.DataFrame, detection_mode: str, grading_mode: str) -> pl.DataFrame:
    """The 17 original columns filled from the chosen modes (corrected columns renamed into place)."""
    det = [
        "has_backtracking_strict",
        "has_backtracking_relaxed",
        "onset_phrase",
        "onset_char",
        "onset_token_in_completion",
        "onset_token_in_full",
        "onset_token_id",
        "onset_token_text",
        "pred_pos_in_full",
    ]
    grd = ["predicted_answer", "is_correct"]
    cols = {c: c for c in M.EVENT_COLUMNS}
    if detection_mode == "corrected" and events["has_backtracking_strict_corrected"].null_count() == 0:
        cols |= {c: f"{c}_corrected" for c in det}
    if grading_mode == "corrected":
        cols |= {c: f"{c}_corrected" for c in grd}
    return events.select([pl.col(src).alias(dst) for dst, src in cols.items()])


def golds_of(problems: pl.DataFrame) -> dict[int, str]:
    return dict(zip(problems["id"].to_list(), problems["answer_value"].to_list(), strict=True))


def write_original_files(profile: Profile, files: dict[str, object]) -> dict[str, dg.MetadataValue]:
    """Write the original's files (same names, keys, column order, float repr) under paths.storage."""
    out = profile.path("storage") / "original_format"
    meta = {}
    for name, obj in files.items():
        path = out / name
        if isinstance(obj, pl.DataFrame):
            M.write_original_csv(obj, path)
        else:
            M.write_json(obj, path)
        meta[name] = dg.MetadataValue.path(str(path))
    return meta


def build(profile: Profile) -> list:
    imported = profile.phase1.import_dir is not None
    variants, conditions = profile.variant_names, list(profile.phase1.conditions)
    det, grd = profile.detection, profile.grading.mode

    if imported:

        @dg.asset(group_name="events", kinds={"polars"})
        def phase1_events(context: dg.AssetExecutionContext, problems: pl.DataFrame) -> pl.DataFrame:
            """Events imported from an original Phase-1 run (backtracking_events.csv, schema-checked)."""
            path = resolve_path(profile.phase1.import_dir) / "backtracking_events.csv"
            df = imported_events(M.read_original_events(path), golds_of(problems))
            context.add_output_metadata(provenance_metadata(profile, source=str(path), rows=df.height))
            return df

        baseline = None
    else:

        @dg.asset(
            group_name="events",
            kinds={"polars"},
            deps=[dg.AssetDep("phase1_generations", partition_mapping=ALL)],
        )
        def baseline_events(
            context: dg.AssetExecutionContext,
            model: HookedModel,
            problems: pl.DataFrame,
            prompts: pl.DataFrame,
        ) -> pl.DataFrame:
            """Detection (strict/relaxed onset, token position) and grading of every baseline completion."""
            cells = phase1_cells(profile, prompts, phase1_keys(profile))
            g = profile.generation
            gens = pl.concat(
                [
                    read_cell(
                        profile.path("storage") / "phase1_generations",
                        c,
                        model_identity(profile),
                        sampling_config(profile),
                        g.samples_per_prompt,
                        g.chunk_problems,
                    )
                    for c in cells
                ]
            )
            df = events_from_generations(
                gens,
                prompts,
                golds_of(problems),
                model.tokenizer,
                det.triggers_strict,
                det.triggers_relaxed,
                profile.model.add_bos,
                det.answer_regex,
            )
            context.add_output_metadata(
                provenance_metadata(
                    profile,
                    rows=df.height,
                    detection_mode=det.mode,
                    grading_mode=grd,
                    bt_seed=int(df["has_backtracking_strict"].sum()),
                    bt_corrected=int(df["has_backtracking_strict_corrected"].sum()),
                )
            )
            return df

        abl_keys = ablation_keys(profile)

        @dg.asset(
            group_name="events",
            kinds={"polars"},
            deps=[dg.AssetDep("ablation_generations", partition_mapping=ALL)] if abl_keys else [],
        )
        def phase1_events(
            context: dg.AssetExecutionContext,
            model: HookedModel,
            problems: pl.DataFrame,
            prompts: pl.DataFrame,
            baseline_events: pl.DataFrame,
            selected_layers: dict,
            random_layers: dict,
        ) -> pl.DataFrame:
            """Events of every Phase-1 cell: the baseline events plus those of the ablation cells."""
            cells = ablation_cells(profile, prompts, abl_keys, selected_layers, random_layers)
            g = profile.generation
            parts = [baseline_events]
            for c in cells:
                gens = read_cell(
                    profile.path("storage") / "ablation_generations",
                    c,
                    model_identity(profile),
                    sampling_config(profile),
                    g.samples_per_prompt,
                    g.chunk_problems,
                )
                parts.append(
                    events_from_generations(
                        gens,
                        prompts,
                        golds_of(problems),
                        model.tokenizer,
                        det.triggers_strict,
                        det.triggers_relaxed,
                        profile.model.add_bos,
                        det.answer_regex,
                    )
                )
            df = pl.concat(parts, how="vertical_relaxed")
            counts = df.group_by("variant", "condition", maintain_order=True).len()
            context.add_output_metadata(provenance_metadata(profile, rows=df.height, cells=table_md(counts)))
            return df

        baseline = baseline_events

    @dg.asset(group_name="metrics", kinds={"polars"})
    def seed_compatible_tables(context: dg.AssetExecutionContext, phase1_events: pl.DataFrame) -> dict:
        """The original's summary_metrics.json, condition_comparison.csv, formatting_summary.csv and
        metrics_v2.json, recomputed exactly as the original did (mixed denominators on purpose)."""
        ev = phase1_events.select(M.EVENT_COLUMNS)
        variant = profile.phase2_variant
        files = {
            "summary_metrics.json": M.summary_metrics(ev, variants, conditions),
            "condition_comparison.csv": M.condition_comparison(ev, variant, conditions),
            "formatting_summary.csv": M.formatting_summary(ev, variants),
            "metrics_v2.json": M.metrics_v2(ev, variants, conditions, variant),
        }
        meta = write_original_files(profile, files)
        context.add_output_metadata(
            provenance_metadata(
                profile,
                **meta,
                condition_comparison=table_md(files["condition_comparison.csv"]),
                formatting_summary=table_md(files["formatting_summary.csv"]),
            )
        )
        return {k: (v.to_dicts() if isinstance(v, pl.DataFrame) else v) for k, v in files.items()}

    @dg.asset(group_name="metrics", kinds={"polars"})
    def metrics_corrected(context: dg.AssetExecutionContext, phase1_events: pl.DataFrame) -> dict:
        """Baseline-only metrics with one accuracy denominator, Wilson and problem-bootstrap intervals."""
        view = analysis_view(phase1_events, det.mode, grd)
        out = M.corrected_metrics(
            view,
            variants,
            conditions,
            regraded=imported,
            seed=profile.run.seed,
            original=phase1_events.select(M.EVENT_COLUMNS),
            evidence=profile.analysis.evidence,
        )
        base = view.filter(pl.col("condition") == "baseline")
        out["figure_rows"] = bt_accuracy_summary(base, profile.run.seed)
        out["modes"] = {
            "detection": det.mode if not imported else "seed_compatible (import)",
            "grading": grd if not imported else "corrected regrade of stored predictions",
        }
        context.add_output_metadata(provenance_metadata(profile, summary=dg.MetadataValue.json(out)))
        return out

    assets = [phase1_events, seed_compatible_tables, metrics_corrected]
    return assets if baseline is None else [baseline, *assets]
