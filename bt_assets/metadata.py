"""Dagster's standard metadata for the platform's outputs, so the UI shows them natively: a table's
row count (``dagster/row_count``), column schema (``dagster/column_schema``) and a ``MetadataValue.table``
preview; reports as markdown with their figures embedded; and the content hash that is an output's data
version; and the run tags that show a run's resolved profile on its run page. Plain functions of
frames, dicts, text and profiles, except ``tag_run`` (the current run)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from bt_assets.config import Profile
from bt_assets.lib.plots import preview_markdown

ROW_COUNT = "dagster/row_count"
COLUMN_SCHEMA = "dagster/column_schema"
PREVIEW_ROWS = 10
TEXT_LIMIT = 80  # characters of a preview cell (completions are thousands)
FIGURE_LINK = re.compile(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)")


def column_schema(df: pl.DataFrame) -> dg.TableSchema:
    """The frame's columns with their polars types."""
    return dg.TableSchema(columns=[dg.TableColumn(name, str(dtype)) for name, dtype in df.schema.items()])


def _cell(v: object) -> str | int | float | bool | None:
    """A preview cell: scalars as they are, anything else (lists, structs, long text) as short text."""
    if v is None or isinstance(v, bool | int | float):
        return v
    text = str(v).replace("\n", " ")
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"


def table_preview(df: pl.DataFrame, max_rows: int = PREVIEW_ROWS) -> dg.MetadataValue:
    """The first ``max_rows`` rows as a ``MetadataValue.table`` (sortable in the UI, typed columns)."""
    records = [dg.TableRecord({k: _cell(v) for k, v in row.items()}) for row in df.head(max_rows).to_dicts()]
    return dg.MetadataValue.table(records=records, schema=column_schema(df))


def standard(meta: dict[str, Any], value: Any = None) -> dict[str, Any]:
    """``meta`` with the standard keys: a frame ``value`` adds its row count, column schema and a preview
    of its head (``preview``, unless the asset chose its own); a ``rows`` entry is the row count."""
    out = dict(meta)
    if "rows" in out:
        out.setdefault(ROW_COUNT, out.pop("rows"))
    if isinstance(value, pl.DataFrame):
        out[ROW_COUNT] = value.height
        out[COLUMN_SCHEMA] = column_schema(value)
        out.setdefault("preview", table_preview(value))
    return out


def content_hash(value: Any) -> str:
    """sha256 of an output's content (a frame's schema and row hashes; a mapping as canonical JSON):
    its data version, equal whenever a rematerialization reproduces the same content."""
    digest = hashlib.sha256()
    if isinstance(value, pl.DataFrame):
        digest.update(json.dumps({k: str(v) for k, v in value.schema.items()}).encode())
        digest.update(value.hash_rows(seed=0).to_numpy().tobytes())
    else:
        digest.update(json.dumps(value, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


def inline_figures(text: str, base_dir: Path) -> dg.MetadataValue:
    """A report's markdown for the UI: every PNG it links (relative to the report's folder) embedded as
    a base64 data URI, so the figures show in the asset's metadata, not as broken relative links. The
    file on disk keeps its relative links (they resolve beside ``figures/``)."""

    def embed(m: re.Match[str]) -> str:
        path = Path(m.group(2))
        return preview_markdown(path if path.is_absolute() else base_dir / path, m.group(1))

    return dg.MetadataValue.md(FIGURE_LINK.sub(embed, text))


def run_tags(profile: Profile) -> dict[str, str]:
    """Tags that put a run's resolved profile on its run page: name, hash and the whole profile as
    canonical JSON (what every asset of the run computed under)."""
    resolved = json.dumps(profile.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return {
        "bt/profile": profile.profile_name,
        "bt/profile_hash": profile.config_hash(),
        "bt/profile_json": resolved,
    }


_TAGGED: set[str] = set()  # runs already tagged by this process


def tag_run(profile: Profile) -> None:
    """Add ``run_tags`` to the current run, whatever launched it (a job, ``dg launch``, the UI's
    Materialize, an automation backfill): once per run, and not at all outside a run."""
    try:
        context = dg.AssetExecutionContext.get()
    except dg.DagsterInvariantViolationError:
        return
    if context.run_id in _TAGGED:
        return
    missing = {k: v for k, v in run_tags(profile).items() if context.run.tags.get(k) != v}
    if missing:
        context.instance.add_run_tags(context.run_id, missing)
    _TAGGED.add(context.run_id)
