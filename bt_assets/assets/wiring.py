"""The one helper module of the asset layer: turns the profile into the lib objects an asset needs
(generation store, sampling, detector, prompt style) and gives every asset the same decorator
arguments and the same way of reporting a materialization (``materialized``: provenance + metadata).

Asset modules import ``bt_assets.lib``, ``bt_assets.config`` and this module (which also hands them the
model resource's type and the partition keys); never each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import torch

from bt_assets import metadata as md
from bt_assets.config import Profile
from bt_assets.lib import cells as cell_lib
from bt_assets.lib.engine import SamplingConfig
from bt_assets.lib.engine_options import EngineOptions
from bt_assets.lib.events import Detector, baseline_view, detect_and_grade
from bt_assets.lib.generation import HOOKS_SUFFIX, Cell, CellReport, GenerationStore
from bt_assets.lib.hooks import HookState, decoder_layers
from bt_assets.lib.prompts import PromptStyle, Variant
from bt_assets.lib.provenance import code_version, hardware, software
from bt_assets.lib.sweeps import check_layers
from bt_assets.partitions import (  # re-exported: the partition keys of the generation assets
    ablation_keys,
    phase1_keys,
    phase1_partitions,
    sweep_cell_list,
    sweep_partitions,
)
from bt_assets.resources import HookedModel  # re-exported: the model resource's type for asset parameters

__all__ = [
    "HookedModel",
    "ablation_keys",
    "phase1_keys",
    "phase1_partitions",
    "sweep_cell_list",
    "sweep_partitions",
]

ALL = dg.AllPartitionMapping()  # an unpartitioned asset that reads every cell of a partitioned one
NO_VALUE: Any = object()  # ``materialized`` without a stored value


# ------------------------------------------------------------------------------ decorator arguments
def cpu_asset(group: str, **kwargs: Any) -> dict[str, Any]:
    """``@dg.asset`` arguments of an asset computed on the CPU from stored tables."""
    return {"group_name": group, "kinds": {"polars"}, **kwargs}


def gpu_asset(profile: Profile, group: str, **kwargs: Any) -> dict[str, Any]:
    """``@dg.asset`` arguments of an asset that runs the model: pool ``gpu`` (one such run at a time,
    ``dagster.yaml``) and the profile's Kubernetes GPU request."""
    return {
        "group_name": group,
        "kinds": {"pytorch", "polars"},
        "pool": "gpu",
        "op_tags": profile.k8s_gpu_op_tags(),
        **kwargs,
    }


def cells_asset(profile: Profile, group: str, partitions: dg.PartitionsDefinition) -> dict[str, Any]:
    """A partitioned generation asset: any selection of cells is ONE run (one model load)."""
    return gpu_asset(
        profile, group, partitions_def=partitions, backfill_policy=dg.BackfillPolicy.single_run()
    )


# ------------------------------------------------------------------------------ metadata
def provenance(profile: Profile) -> dict[str, str]:
    """What every output records: profile, its hash, code version, model and seed."""
    return {
        "profile": profile.profile_name,
        "profile_hash": profile.config_hash(),
        "code_version": code_version(),
        "model_id": profile.model.id,
        "seed": str(profile.run.seed),
    }


def run_provenance(profile: Profile) -> dict[str, str]:
    """``provenance`` plus the machine: hardware and software versions (every materialization, every
    report header)."""
    return {**provenance(profile), "hardware": hardware(), "software": software()}


def materialized(
    profile: Profile,
    value: Any = NO_VALUE,
    *,
    checks: Sequence[dg.AssetCheckResult] = (),
    **metadata: Any,
) -> dg.MaterializeResult:
    """The one way an asset reports: its value (stored by the IO manager), its checks, and metadata =
    provenance (profile, hash, code version, seed, hardware, software) + ``metadata``, with Dagster's
    standard keys (``metadata.standard``: a frame's row count, column schema and preview; ``rows``
    becomes ``dagster/row_count``). A stored value also gives the data version (a hash of its content),
    so descendants go stale only when the content changes, not on every rematerialization."""
    md.tag_run(profile)  # the run page shows the resolved profile
    meta = md.standard({**run_provenance(profile), **metadata}, None if value is NO_VALUE else value)
    if value is NO_VALUE:
        return dg.MaterializeResult(metadata=meta, check_results=list(checks))
    version = dg.DataVersion(md.content_hash(value))
    return dg.MaterializeResult(value=value, metadata=meta, check_results=list(checks), data_version=version)


def table_md(df: pl.DataFrame, max_rows: int = 20) -> dg.MetadataValue:
    """A preview of a small table for the Dagster UI (``MetadataValue.table``, with its schema)."""
    return md.table_preview(df, max_rows)


def report_md(text: str, base_dir: Path) -> dg.MetadataValue:
    """A markdown report for the UI, its figures (linked relative to ``base_dir``) embedded as data URIs."""
    return md.inline_figures(text, base_dir)


# ------------------------------------------------------------------------------ profile -> lib objects
def sampling(profile: Profile) -> SamplingConfig:
    g = profile.generation
    return SamplingConfig(
        temperature=g.temperature,
        top_p=g.top_p,
        top_k=g.top_k,
        max_new_tokens=g.max_new_tokens,
        seed=profile.run.seed,
    )


def store(profile: Profile, asset: str, samples: int) -> GenerationStore:
    """The generation store of ``asset`` (``paths.storage/<asset>``), ``samples`` per problem."""
    return GenerationStore(
        root=profile.path("storage") / asset,
        identity=profile.model.identity(),
        sampling=sampling(profile),
        samples=samples,
        chunk_problems=profile.generation.chunk_problems,
        add_bos=profile.model.add_bos,
    )


def detector(profile: Profile) -> Detector:
    d = profile.detection
    return Detector(
        tuple(d.triggers_strict), tuple(d.triggers_relaxed), profile.model.add_bos, d.answer_regex
    )


def events_of(
    profile: Profile,
    model: HookedModel,
    gens: pl.DataFrame,
    prompts: pl.DataFrame,
    problems: pl.DataFrame,
    keep_token_ids: bool = False,
) -> pl.DataFrame:
    """Detection and grading of stored completions under the profile's detector."""
    return detect_and_grade(gens, prompts, problems, model.tokenizer, detector(profile), keep_token_ids)


def baseline(
    profile: Profile, events: pl.DataFrame, variant: str | None = None, keep: Sequence[str] = ()
) -> pl.DataFrame:
    """Baseline rows in the profile's detection/grading modes (all variants, or one), plus ``keep``."""
    return baseline_view(events, profile.detection.mode, profile.grading.mode, variant, keep)


def prompt_style(profile: Profile, system_prompt: bool = True) -> PromptStyle:
    p = profile.prompting
    return PromptStyle(
        template=p.template,
        system_prompt=p.system_prompt if system_prompt else None,
        chat_template=p.chat_template,
        mode=p.mode,
    )


def variants(profile: Profile, names: Sequence[str] | None = None) -> list[Variant]:
    return [
        Variant(v.name, v.think_open, v.think_close, tuple(v.drop_lines))
        for v in profile.prompting.variants
        if names is None or v.name in names
    ]


def engine_options(profile: Profile, device: torch.device) -> EngineOptions:
    """The engine's defaults for ``device`` with the profile's ``generation.min_decode_rows`` /
    ``eos_check_every`` where set. Operational keys (not in the chunk fingerprint); on CPU a floor below
    16 gives up bit-identical completions across batch sizes (``engine`` docstring, rule 2)."""
    g = profile.generation
    set_keys = {"min_decode_rows": g.min_decode_rows, "eos_check_every": g.eos_check_every}
    set_keys["scheduler"] = g.scheduler  # static | continuous (bt_assets.lib.scheduler)
    return replace(EngineOptions.for_device(device), **{k: v for k, v in set_keys.items() if v is not None})


def ablation_cells(
    profile: Profile, prompts: pl.DataFrame, keys: Sequence[str], selected: dict, random_sets: dict
) -> list[Cell]:
    """Phase-1 ablation cells: targeted = the selected layers, ``random_ablation_s<seed>`` = that seed's
    random layer set (every seed of ``ablation.random_seeds`` is generated)."""
    return cell_lib.ablation_cells(prompts, keys, selected, random_sets, profile.ablation_scale)


def n_layers(profile: Profile, model: HookedModel) -> int:
    """The loaded model's decoder layers, after checking every configured layer against them (the
    error names the profile key)."""
    n = len(decoder_layers(model.model))
    profile.check_layers(n)
    return n


# ------------------------------------------------------------------------------ generation cells
def generate(
    context: dg.AssetExecutionContext,
    profile: Profile,
    model: HookedModel,
    gen_store: GenerationStore,
    cells: Sequence[Cell],
    prompt_table: pl.DataFrame,
    hook_state: HookState | None = None,
    **metadata: Any,
) -> dg.MaterializeResult:
    """Generate every missing chunk of ``cells`` in one pass (one model load) and report each cell as
    its partition's metadata. Prompts are padded to the longest of ``prompt_table`` (all cells of the
    asset), so a cell's tokens do not depend on which other cells share its run. When every chunk of
    every cell is on disk and intact, nothing is decoded and the model is not loaded."""
    hooks = HOOKS_SUFFIX if hook_state is not None else None
    reports = finished_reports(gen_store, cells, hooks)
    if reports is not None:
        context.log.info(f"{len(cells)} cells: every chunk intact on disk, reused; the model is not loaded")
        return reported(context, profile, reports, **metadata)
    layers = n_layers(profile, model)  # fail before any decoding, naming the key
    for c in cells:  # every cell's scaled layers exist in the loaded model
        check_layers(list(c.scales), layers, f"cell {c.key}")
        if c.scales:
            context.log.info(f"{c.key}: {len(c.scales)} components scaled: {sorted(c.scales)}")
    reports = gen_store.run(
        model.model,
        model.tokenizer,
        cells,
        batch_size=profile.generation.batch_size,
        eos_ids=model.eos_ids(),
        provenance=provenance(profile),
        hook_state=hook_state,
        log=context.log.info,
        progress=context.log.info,  # rows done, tok/s, ETA: after the first batch, then every ~10 s
        prompt_width=int(prompt_table["prompt_tokens"].max() or 0),
        options=engine_options(profile, next(model.model.parameters()).device),
    )
    return reported(context, profile, reports, **metadata)


def reported(
    context: dg.AssetExecutionContext, profile: Profile, reports: dict[str, CellReport], **metadata: Any
) -> dg.MaterializeResult:
    """Each cell's report as its partition's metadata, and the run's totals."""
    for key, rep in reports.items():
        context.add_asset_metadata(cell_metadata(profile, rep), partition_key=key)
    rows = sum(r.rows for r in reports.values())
    return materialized(profile, cells=len(reports), rows=rows, **metadata)


def finished_reports(
    gen_store: GenerationStore, cells: Sequence[Cell], sidecar: str | None
) -> dict[str, CellReport] | None:
    """The reports of ``cells`` when every one is finished (manifest and chunks verify, hook sidecars
    present when counted), all chunks reused; None when any chunk must be generated."""
    if any(gen_store.verify(c) for c in cells):
        return None
    reports = {}
    for c in cells:
        s, n = gen_store.chunk_store(c), len(gen_store.chunks(c))
        if sidecar is not None and not all(
            s.path(k).with_name(f"chunk-{k:05d}{sidecar}").is_file() for k in range(n)
        ):
            return None
        df = s.read_all(n)
        truncated = int((df["finish_reason"] == "length").sum())
        reports[c.key] = CellReport(
            c.key, rows=df.height, chunks_reused=n, truncated=truncated, path=str(s.directory)
        )
    return reports


def cell_metadata(profile: Profile, rep: CellReport) -> dict[str, Any]:
    """One cell's partition metadata: rows, chunks reused/written/discarded, throughput, truncation."""
    return {
        "profile_hash": profile.config_hash(),
        "dagster/row_count": rep.rows,
        "new_rows": rep.new_rows,
        "chunks_reused": rep.chunks_reused,
        "chunks_written": rep.chunks_written,
        "chunks_discarded": rep.chunks_discarded,
        "tokens_per_s": round(rep.tokens_per_s, 1),
        "new_tokens": rep.new_tokens,
        "generation_seconds": round(rep.seconds, 2),
        "truncated_share": round(rep.truncated / rep.rows, 4) if rep.rows else 0.0,
        "path": dg.MetadataValue.path(rep.path),
    }


def verify_cells(
    context: dg.AssetCheckExecutionContext, gen_store: GenerationStore, cells: Sequence[Cell]
) -> dg.AssetCheckResult:
    """Every materialized cell of the store's asset is intact on disk: a manifest of its current
    fingerprint, each chunk present with the recorded size and sha256 (cells never materialized are
    skipped)."""
    done = set(context.instance.get_materialized_partitions(dg.AssetKey(gen_store.root.name)))
    checked = [c for c in cells if c.key in done]
    problems = {c.key: p for c in checked if (p := gen_store.verify(c))}
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


def chunks_check(asset: dg.AssetsDefinition, *ins: str) -> dict[str, Any]:
    """``@dg.asset_check`` arguments of a generation asset's blocking ``chunks_verify`` check, whose
    inputs ``ins`` (asset names) say which cells the asset can hold."""
    return {
        "asset": asset,
        "name": "chunks_verify",
        "blocking": True,
        "additional_ins": {name: dg.AssetIn(name) for name in ins},
        "description": "Materialized cells are intact: a manifest, every chunk with its recorded sha256.",
    }
