"""Crash safety: SIGKILL the generation run mid-way; the rerun reuses every finished chunk, never reads
a partial file, and produces exactly what an uninterrupted run produces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from bt_assets.config import load_profile
from bt_assets.definitions import build_definitions
from bt_assets.launch import plan_waves, run_wave
from bt_assets.lib.chunkstore import ChunkStore
from bt_assets_tests.conftest import write_profile

ROOT = Path(__file__).resolve().parents[1]
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


@pytest.mark.slow
def test_kill_and_resume(tmp_path, tiny_dirs):
    prof_path = write_profile(tmp_path, tiny_dirs["llama"], extra=SLOW)
    profile = load_profile(str(prof_path))
    storage = profile.path("storage")
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(prof_path)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline and len(chunk_files(storage)) < 2 and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed: make it slower"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p: p.stat().st_mtime_ns for p in chunk_files(storage)}
    n_cells, n_chunks = len(profile.variant_names), profile.dataset.n
    assert 2 <= len(before) < n_cells * n_chunks

    defs = build_definitions(profile)
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        for wave in plan_waves(
            defs, {dg.AssetKey("problems"), dg.AssetKey("prompts"), dg.AssetKey("phase1_generations")}
        ):
            assert run_wave(defs, wave, instance)
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
    (tmp_path / "fresh" / "home").mkdir(parents=True)
    fresh = load_profile(str(write_profile(tmp_path / "fresh", tiny_dirs["llama"], extra=SLOW)))
    with dg.instance_for_test(temp_dir=str(tmp_path / "fresh" / "home")) as instance:
        defs2 = build_definitions(fresh)
        for wave in plan_waves(
            defs2, {dg.AssetKey("problems"), dg.AssetKey("prompts"), dg.AssetKey("phase1_generations")}
        ):
            assert run_wave(defs2, wave, instance)

    def read(root: Path) -> pl.DataFrame:
        files = sorted((root / "phase1_generations").rglob("chunk-*.parquet"))
        return (
            pl.concat([pl.read_parquet(f) for f in files])
            .sort("cell", "example_id", "sample_id")
            .select("cell", "example_id", "sample_id", "completion_token_ids", "finish_reason")
        )

    assert read(storage).equals(read(fresh.path("storage")))
