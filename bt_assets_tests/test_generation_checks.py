"""Corrupt generations are never used: the ``chunks_verify`` asset check of a generation asset fails
naming the bad file, a downstream asset refuses to read the cell (naming the file), and rematerializing
the partition moves the bad chunk aside, regenerates only it and makes the check pass again."""

from __future__ import annotations

import dagster as dg
import pytest

from bt_assets.config import load_profile
from bt_assets.definitions import build_definitions
from bt_assets.launch import plan_waves, run_wave
from bt_assets_tests.conftest import (
    PHASE1_GENERATION,
    check_record,
    file_states,
    latest_run_metadata,
    run_waves,
    tiny_profile,
    tmp_instance,
)

GENS = dg.AssetKey("phase1_generations")
CHECK = dg.AssetCheckKey(GENS, "chunks_verify")


def run_check(defs: dg.Definitions, instance: dg.DagsterInstance, key: dg.AssetCheckKey):
    """Execute one asset check alone (as the UI's "Execute check" does) and return its evaluation."""
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection={key}
    )
    job.execute_in_process(instance=instance, raise_on_error=False)
    return check_record(instance, key).evaluation


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The messages of every step failure with their causes (the asset's own error is a cause)."""
    out = []
    for ev in result.all_events:
        err = ev.event_specific_data.error if ev.event_type_value == "STEP_FAILURE" else None
        while err is not None:
            out.append(err.message)
            err = err.cause
    return "\n".join(out)


@pytest.fixture(scope="module")
def materialized(tmp_path_factory, tiny_dirs):
    tmp = tmp_path_factory.mktemp("checks")
    profile = tiny_profile(tmp, tiny_dirs["qwen2"])
    defs = build_definitions(profile)
    with tmp_instance(tmp) as instance:
        run_waves(defs, PHASE1_GENERATION, instance)
        yield profile, defs, instance


def test_every_generation_asset_has_a_blocking_chunks_check():
    graph = build_definitions(load_profile("demo")).resolve_asset_graph()
    for name in ("phase1_generations", "ablation_generations", "sweep_generations"):
        key = dg.AssetCheckKey(dg.AssetKey(name), "chunks_verify")
        assert key in graph.asset_check_keys, name
        assert graph.get(key).blocking


@pytest.mark.slow
def test_corrupt_chunk_fails_the_check_blocks_readers_and_heals(materialized):
    profile, defs, instance = materialized
    ev = check_record(instance, CHECK).evaluation  # ran with the materialization (same run)
    assert ev.passed and ev.metadata["cells_checked"].value == len(profile.variant_names)

    root = profile.path("storage") / "phase1_generations"
    files = sorted(root.rglob("chunk-*.parquet"))
    victim = files[len(files) // 2]
    before = file_states(files)
    data = victim.read_bytes()
    victim.write_bytes(data[:-16] + bytes(16))  # same size, other bytes: only the sha256 can tell

    ev = run_check(defs, instance, CHECK)
    assert not ev.passed
    assert str(victim) in ev.description and "sha256 differs" in ev.description
    assert len(ev.metadata["cells_bad"].value) == 1

    # a downstream reader fails naming the file instead of using the data
    wave = plan_waves(defs, {dg.AssetKey("baseline_events")})[0]
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=wave, raise_on_error=False
    )
    assert not result.success
    msg = failure_message(result)
    assert str(victim) in msg and "incomplete or corrupt" in msg and "Rematerialize" in msg

    victim.write_bytes(data[: len(data) // 3])  # now truncated as well
    ev = run_check(defs, instance, CHECK)
    assert not ev.passed and str(victim) in ev.description and "size" in ev.description

    # rematerializing regenerates only the bad chunk; every other file keeps its inode and mtime
    assert run_wave(defs, [GENS], instance)
    assert check_record(instance, CHECK).evaluation.passed
    assert victim.read_bytes() == data  # deterministic sampling: the same bytes as before
    assert victim.with_name(victim.name + ".corrupt").read_bytes() == data[: len(data) // 3]
    others = [p for p in files if p != victim]
    assert file_states(others) == {p: before[p] for p in others}
    last = latest_run_metadata(instance, GENS).values()
    counts = sorted((m["chunks_written"], m["chunks_discarded"]) for m in last)
    assert counts == [(0, 0)] * (len(last) - 1) + [(1, 1)]
