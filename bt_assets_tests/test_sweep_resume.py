"""Crash safety of the Phase-2 sweep: SIGKILL a materialization of every ``sweep_generations`` cell
(one run, partition range tags, as ``launch.run_wave`` launches it) in the middle of a chunk (some cells
have written it, some not; the next cell's hook sidecar is on disk but not its chunk), damage the
leftovers the way a crash or a bad copy could, and rerun. The rerun reuses every finished chunk
untouched (same inode, mtime and sha256), never accepts a truncated chunk or a temp file as complete,
touches no other cell's files, and ends byte-identical to an uninterrupted run."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from bt_assets.config import load_profile
from bt_assets.definitions import build_definitions
from bt_assets.launch import run_wave
from bt_assets.lib.chunkstore import ChunkStore, file_sha256, safe_name
from bt_assets.partitions import sweep_cell_list
from bt_assets_tests.conftest import (
    check_record,
    dagster_env,
    file_states,
    kill_script_when,
    latest_run_metadata,
    run_waves,
    tmp_instance,
    wait_biased_model,
    write_profile,
)

pytestmark = pytest.mark.slow

SWEEP = dg.AssetKey("sweep_generations")
CHECK = dg.AssetCheckKey(SWEEP, "chunks_verify")
# one problem per chunk: 4 chunks per cell; 10 rows per chunk over the 5 cells, in 2 decode batches
GEN = "generation: {samples_per_prompt: 2, max_new_tokens: 8, batch_size: 5, chunk_problems: 1}\n"
UPSTREAM = {
    "problems",
    "prompts",
    "phase1_generations",
    "baseline_events",
    "event_sample",
    "ablation_scan",
    "selected_layers",
    "sweep_prompts",
}
# The run to kill. Where it dies does not depend on the machine's speed: the write of chunk 1 of the
# third cell signals the test and hangs (its hook sidecar is already on disk, chunk 1 of the first two
# cells too), and the test SIGKILLs it there.
SCRIPT = """
import pathlib, sys, time
import dagster as dg
from bt_assets.config import load_profile
from bt_assets.definitions import build_definitions
from bt_assets.launch import run_wave
from bt_assets.lib.chunkstore import ChunkStore

real_write, seen = ChunkStore.write, []

def write(self, index, df):
    seen.append(index)
    if seen.count(1) == 3:
        pathlib.Path(sys.argv[2]).touch()
        time.sleep(600)
    return real_write(self, index, df)

ChunkStore.write = write
defs = build_definitions(load_profile(sys.argv[1]))
with dg.DagsterInstance.get() as instance:
    run_wave(defs, [dg.AssetKey("sweep_generations")], instance)
"""


def state(root: Path) -> dict[Path, tuple[int, int, str]]:
    """inode, mtime and sha256 of every chunk and sidecar file under ``root``."""
    return file_states([*root.rglob("chunk-*.parquet"), *root.rglob("chunk-*.hooks.json")])


def test_sweep_kill_resume_equals_uninterrupted(tmp_path, tiny_dirs):
    prof_path = write_profile(tmp_path, tiny_dirs["llama"], extra=GEN)
    profile = load_profile(str(prof_path))
    storage = profile.path("storage")
    sweep_root = storage / "sweep_generations"
    keys = [c.key for c in sweep_cell_list(profile)]  # the order the cells decode and write in
    n_chunks = profile.phase2.n_problems  # one problem per chunk

    # upstream on the same instance and storage, with a model biased towards "Wait" and EOS so Phase 1
    # finds events to select layers from (it only changes what Phase 1 samples); the sweep itself runs
    # the unbiased model, which never stops early
    up = build_definitions(profile, model=wait_biased_model(profile.source))
    with tmp_instance(tmp_path) as instance:
        run_waves(up, UPSTREAM, instance)
    upstream_files = {p: p.stat().st_mtime_ns for p in storage.glob("*.*")}

    # 1. SIGKILL the all-cells run in the middle of chunk 1
    signal_file = tmp_path / "kill-me-now"
    env = dagster_env(tmp_path / "home", prof_path)
    kill_script_when(SCRIPT, [str(prof_path), str(signal_file)], env, signal_file.exists, timeout=300)

    before = state(sweep_root)
    done = {p for p in before if p.suffix == ".parquet"}
    assert len(done) == len(keys) + 2  # chunk 0 of every cell, chunk 1 of the first two
    stores = {k: ChunkStore(sweep_root, k, next((sweep_root / safe_name(k)).iterdir()).name) for k in keys}
    assert [len(stores[k].indices()) for k in keys] == [2, 2] + [1] * (len(keys) - 2)
    orphan = stores[keys[2]].directory / "chunk-00001.hooks.json"  # written just before the kill
    assert orphan.is_file() and not stores[keys[2]].done(1)
    for k, s in stores.items():  # nothing is finalized, so no reader would accept a cell
        assert s.manifest() is None and s.verify()[0].startswith("not finalized"), k
        assert all(s.path(i).with_name(f"chunk-{i:05d}.hooks.json").is_file() for i in s.indices())

    # 2. damage: a truncated chunk where one is missing (a non-atomic copy, a disk error) and a temp
    #    file of a write that never finished, in two different cells
    victim_key = max(keys, key=lambda k: len(stores[k].missing(n_chunks)))
    victim = stores[victim_key]
    hole = victim.missing(n_chunks)[0]
    full = victim.path(0).read_bytes()
    planted = full[: len(full) // 2]
    victim.path(hole).write_bytes(planted)
    other = stores[next(k for k in keys if k != victim_key)]
    tmp_file = other.directory / f".chunk-{n_chunks - 1:05d}.parquet.0123456789ab.tmp"
    tmp_file.write_bytes(full[:100])

    # 3. resume in-process: one run over all cells, reusing what finished
    defs = build_definitions(profile)
    with tmp_instance(tmp_path) as instance:
        assert run_wave(defs, [SWEEP], instance)
        meta = latest_run_metadata(instance, SWEEP)
        check = check_record(instance, CHECK)
        assert check.evaluation.passed and check.evaluation.metadata["cells_checked"].value == len(keys)
    after = state(sweep_root)

    for p, st in before.items():  # finished chunks (and their sidecars) in every cell: untouched
        assert after[p] == st or p == orphan, p
    assert after[orphan][:2] != before[orphan][:2]  # the orphan sidecar was rewritten with its chunk
    for k, s in stores.items():
        assert s.verify() == [] and s.indices() == list(range(n_chunks)), k
        reused = sum(p.parent == s.directory for p in done)
        assert meta[k]["chunks_reused"] == reused and meta[k]["chunks_written"] == n_chunks - reused, k
        assert meta[k]["chunks_discarded"] == (k == victim_key), k  # the planted chunk, nothing else
    assert victim.path(hole).with_name(victim.path(hole).name + ".corrupt").read_bytes() == planted
    assert victim.read(hole).height == 2 and after[victim.path(hole)][2] != file_sha256(victim.path(0))
    assert not list(sweep_root.rglob("*.tmp"))
    assert {p: p.stat().st_mtime_ns for p in storage.glob("*.*")} == upstream_files  # upstream untouched

    # 4. an uninterrupted run of every cell produces byte-identical chunks
    shutil.move(sweep_root, storage / "sweep_resumed")
    with tmp_instance(tmp_path) as instance:
        assert run_wave(defs, [SWEEP], instance)
        assert all(m["chunks_reused"] == 0 for m in latest_run_metadata(instance, SWEEP).values())
    resumed, fresh = storage / "sweep_resumed", sweep_root
    chunks = sorted(p.relative_to(fresh) for p in fresh.rglob("chunk-*.parquet"))
    assert len(chunks) == len(keys) * n_chunks
    assert chunks == sorted(p.relative_to(resumed) for p in resumed.rglob("chunk-*.parquet"))
    for rel in chunks:
        assert file_sha256(fresh / rel) == file_sha256(resumed / rel), rel
