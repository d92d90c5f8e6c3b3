"""Glue shared by the asset modules: profile-derived settings and provenance metadata."""

from typing import Any

import dagster as dg
import polars as pl

from bt_assets.config import Profile
from bt_assets.lib.engine import SamplingConfig
from bt_assets.lib.generation import Cell
from bt_assets.lib.provenance import code_version, hardware, software
from bt_assets.partitions import parse_cell_key
from bt_assets.resources import HookedModel

GPU_KINDS = {"pytorch", "polars"}


def model_resource(profile: Profile) -> HookedModel:
    m = profile.model
    return HookedModel(
        model_id=m.id,
        gguf_file=m.gguf_file,
        dtype=m.dtype,
        device=m.device,
        attn_implementation=m.attn_implementation,
        revision=m.revision,
    )


def model_identity(profile: Profile) -> dict[str, object]:
    """What identifies the weights and numerics (part of every generation cell's fingerprint)."""
    m = profile.model
    return {
        "id": m.id,
        "gguf_file": m.gguf_file,
        "dtype": m.dtype,
        "revision": m.revision,
        "attn": m.attn_implementation,
        "add_bos": m.add_bos,
    }


def sampling_config(profile: Profile) -> SamplingConfig:
    g = profile.generation
    return SamplingConfig(
        temperature=g.temperature,
        top_p=g.top_p,
        top_k=g.top_k,
        max_new_tokens=g.max_new_tokens,
        seed=profile.run.seed,
    )


def provenance(profile: Profile) -> dict[str, str]:
    return {
        "profile": profile.profile_name,
        "profile_hash": profile.config_hash(),
        "code_version": code_version(),
        "model_id": profile.model.id,
        "seed": str(profile.run.seed),
    }


def provenance_metadata(profile: Profile, **extra: Any) -> dict[str, Any]:
    """Metadata attached to every materialization: profile, config hash, code version, seed, hardware."""
    return {**provenance(profile), "hardware": hardware(), "software": software(), **extra}


def phase1_cells(profile: Profile, prompts: pl.DataFrame, keys: list[str]) -> list[Cell]:
    """Baseline cells (one per variant) for the given partition keys."""
    cells = []
    for key in keys:
        parts = parse_cell_key(key)
        rows = prompts.filter(pl.col("variant") == parts["variant"])
        cells.append(Cell(key=key, variant=parts["variant"], condition=parts["condition"], prompts=rows))
    return cells


def table_md(df: pl.DataFrame, max_rows: int = 20) -> dg.MetadataValue:
    """A markdown preview of a small table for the Dagster UI."""
    head = df.head(max_rows)
    cols = head.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in head.iter_rows():
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    if df.height > max_rows:
        lines.append(f"\n… {df.height - max_rows} more rows")
    return dg.MetadataValue.md("\n".join(lines))


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    text = str(v).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "…"
