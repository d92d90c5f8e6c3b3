"""Crash safety: SIGKILL the generation run mid-way; the rerun reuses every finished chunk, never reads
a partial file, and produces exactly what an uninterrupted run produces."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from bt_assets.config import load_profile
from bt_assets.definitions import build_definitions
from bt_assets.lib.chunkstore import ChunkStore
from bt_assets_tests.conftest import (
    PHASE1_GENERATION,
    dagster_env,
    kill_script_when,
    run_waves,
    tiny_profile,
    tmp_instance,
    write_profile,
)

pytestmark = pytest.mark.slow

SLOW = (
    "generation: {samples_per_prompt: 2, max_new_tokens: 120, batch_size: 4, chunk_problems: 1, "
    "temperature: 1.0}\n"
)

SCRIPT = """
import sys
import dagster as dg
from bt_assets.config import load_profile
from bt_assets.definitions import build_definitions
from bt_assets.launch import plan_waves, run_wave
defs = build_definitions(load_profile(sys.argv[1]))
with dg.DagsterInstance.get() as instance:
    for wave in plan_waves(defs, {dg.AssetKey("problems"), dg.AssetKey("prompts"),
                                  dg.AssetKey("phase1_generations")}):
        run_wave(defs, wave, instance)
"""


def chunk_files(storage: Path) -> list[Path]:
    return sorted((storage / "phase1_generations").rglob("chunk-*.parquet"))


def test_kill_and_resume(tmp_path, tiny_dirs):
    prof_path = write_profile(tmp_path, tiny_dirs["llama"], extra=SLOW)
    profile = load_profile(str(prof_path))
    storage = profile.path("storage")
    (tmp_path / "home").mkdir()
    env = dagster_env(tmp_path / "home", prof_path)
    kill_script_when(SCRIPT, [str(prof_path)], env, lambda: len(chunk_files(storage)) >= 2, timeout=240)
    before = {p: p.stat().st_mtime_ns for p in chunk_files(storage)}
    n_cells, n_chunks = len(profile.variant_names), profile.dataset.n
    assert 2 <= len(before) < n_cells * n_chunks

    defs = build_definitions(profile)
    with tmp_instance(tmp_path) as instance:
        run_waves(defs, PHASE1_GENERATION, instance)
        mat = instance.get_latest_materialization_event(
            dg.AssetKey("phase1_generations")
        ).asset_materialization
    after = chunk_files(storage)
    assert len(after) == n_cells * n_chunks
    for p, mtime in before.items():  # finished chunks were not regenerated
        assert p.stat().st_mtime_ns == mtime
    assert not list(storage.rglob("*.tmp"))  # no partial file left, none read
    for d in {p.parent for p in after}:
        manifest = json.loads((d / "manifest.json").read_text())
        store = ChunkStore(storage / "phase1_generations", manifest["cell_key"], manifest["fingerprint"])
        assert store.directory == d and store.verify() == []
    assert mat is not None

    # the resumed output equals an uninterrupted run in a fresh storage root
    (tmp_path / "fresh").mkdir()
    fresh = tiny_profile(tmp_path / "fresh", tiny_dirs["llama"], extra=SLOW)
    with tmp_instance(tmp_path / "fresh") as instance:
        run_waves(build_definitions(fresh), PHASE1_GENERATION, instance)

    def read(root: Path) -> pl.DataFrame:
        files = sorted((root / "phase1_generations").rglob("chunk-*.parquet"))
        return (
            pl.concat([pl.read_parquet(f) for f in files])
            .sort("cell", "example_id", "sample_id")
            .select("cell", "example_id", "sample_id", "completion_token_ids", "finish_reason")
        )

    assert read(storage).equals(read(fresh.path("storage")))
