"""A small path-based IO manager: Polars frames as parquet, dicts as JSON, under ``paths.storage``.

Hand-written because dagster-polars does not work with polars 2.x. Partitioned generation assets do
not go through it: they write their own resumable chunk files and return ``MaterializeResult``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from bt_assets.lib.chunkstore import atomic_write_bytes, atomic_write_parquet


class PolarsParquetIOManager(dg.ConfigurableIOManager):
    """Stores ``pl.DataFrame`` outputs as ``<base_dir>/<asset name>.parquet`` and dicts as ``.json``."""

    base_dir: str

    def _path(self, key: dg.AssetKey, suffix: str) -> Path:
        # one code location per storage dir, so the asset name alone is unique there; a location's key
        # prefix (``original_run/...``) names the location in the UI, not a folder
        return (Path(self.base_dir) / key.path[-1]).with_suffix(suffix)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        key = context.asset_key
        if isinstance(obj, pl.DataFrame):
            path = self._path(key, ".parquet")
            atomic_write_parquet(path, obj)  # a full disk or a denied path: OSError naming path and cause
            context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})  # row count: wiring
        elif isinstance(obj, dict | list):
            path = self._path(key, ".json")
            atomic_write_bytes(path, json.dumps(obj, indent=2, default=str).encode())
            context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})
        else:
            raise TypeError(f"{key.to_user_string()}: cannot store a {type(obj).__name__}")

    def load_input(self, context: dg.InputContext) -> Any:
        key = context.asset_key
        parquet, js = self._path(key, ".parquet"), self._path(key, ".json")
        if parquet.exists():
            return pl.read_parquet(parquet)
        if js.exists():
            return json.loads(js.read_text())
        raise FileNotFoundError(f"{key.to_user_string()} has not been materialized (no {parquet} or {js})")
