"""Progress of long generations: throttled lines (rows done, tok/s, ETA) from ``GenerationStore.run`` to
a log callback such as Dagster's ``context.log.info``."""

from __future__ import annotations

import re

import polars as pl
import pytest

from bt_assets.lib.engine import SamplingConfig
from bt_assets.lib.generation import Cell, GenerationStore
from bt_assets.lib.progress import ProgressLog
from bt_assets_tests.conftest import (
    EOS_ID,
    PHASE1_GENERATION,
    run_waves,
    tiny_model,
    tiny_profile,
    tmp_instance,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_lines_are_throttled():
    lines: list[str] = []
    clock = Clock()
    log = ProgressLog(lines.append, rows_total=100, every_s=10.0, clock=clock)
    for rows in range(10, 101, 10):  # one batch of 10 rows every 3 s, two generate calls of 50 rows
        clock.now += 3.0
        log.batch_done({"rows_done": rows - 50 * (rows > 50), "tokens": 4 * (rows - 50 * (rows > 50))})
        if rows == 50:
            log.chunk_done()
    # first batch (t=3), then t=15, t=27 (>= 10 s after the previous line), and the last batch (t=30)
    assert len(lines) == 4 == log.lines
    assert (
        lines[0]
        == "generation progress: 10/100 rows (10%), 40 tokens, 13.3 tok/s, elapsed 0:00:03, ETA 0:00:27"
    )
    assert lines[1].startswith("generation progress: 50/100 rows (50%), 200 tokens")
    assert (
        lines[-1].startswith("generation progress: 100/100 rows (100%), 400 tokens")
        and "ETA 0:00:00" in lines[-1]
    )


def test_no_callback_no_lines():
    log = ProgressLog(None, rows_total=4)
    log.batch_done({"rows_done": 4, "tokens": 8})
    assert log.lines == 0 and log.rows_now == 4


@pytest.mark.slow
def test_store_run_reports_progress(tmp_path, demo_tokenizer):
    prompts = pl.DataFrame(
        {
            "example_id": [0, 1, 2],
            "prompt": ["What is 2 + 3?", "Add 4 and 5.", "Seven minus one?"],
            "prompt_hash": ["a", "b", "c"],
            "prompt_tokens": [8, 5, 4],
        }
    )
    cells = [
        Cell("v=base,c=base", "base", "base", prompts),
        Cell("v=base,c=abl", "base", "abl", prompts, {("mlp", 1): 0.0}),
    ]
    lines: list[str] = []
    store = GenerationStore(
        root=tmp_path,
        identity={"model": "tiny"},
        sampling=SamplingConfig(temperature=1.0, top_p=0.95, top_k=64, max_new_tokens=4, seed=3),
        samples=2,
        chunk_problems=2,
        add_bos=False,
    )
    kwargs = dict(
        batch_size=3,
        eos_ids=[EOS_ID],
        provenance={},
        log=lambda _m: None,
        progress=lines.append,
        progress_every_s=0.0,  # every batch
    )
    reports = store.run(tiny_model("llama"), demo_tokenizer, cells, **kwargs)
    total = 2 * 3 * 2  # cells x problems x samples
    assert sum(r.new_rows for r in reports.values()) == total
    done = [int(re.search(r"progress: (\d+)/(\d+) rows", line).group(1)) for line in lines]
    # batches of <= 3 rows that split a prompt's 4 rows (2 samples x 2 cells) only because it has more
    # than 3: chunk 0 (2 prompts) -> 3 + 1, 3 + 1; chunk 1 (1 prompt) -> 3 + 1
    assert done == sorted(done) and done[-1] == total and len(lines) == 4 + 2
    assert all(f"/{total} rows" in line and "tok/s" in line and "ETA" in line for line in lines)
    assert all(r.tokens_per_s > 0 and r.seconds > 0 for r in reports.values())
    lines.clear()  # a rerun reuses every chunk: nothing to generate, no progress lines
    again = store.run(tiny_model("llama"), demo_tokenizer, cells, **kwargs)
    assert not lines and all(r.new_rows == 0 for r in again.values())


@pytest.mark.slow
def test_generation_asset_logs_progress_and_throughput(tmp_path, tiny_dirs):
    """The phase-1 generation asset passes its run log to ``GenerationStore.run``: progress lines land in
    the Dagster run's event log, and each cell's materialization carries its throughput."""
    import dagster as dg

    from bt_assets.definitions import build_definitions

    defs = build_definitions(tiny_profile(tmp_path, tiny_dirs["qwen2"]))
    gens = dg.AssetKey("phase1_generations")
    with tmp_instance(tmp_path) as instance:
        run_waves(defs, PHASE1_GENERATION, instance)
        records = instance.fetch_materializations(gens, limit=100).records
        run_id = records[0].event_log_entry.run_id
        messages = [e.user_message for e in instance.all_logs(run_id)]
        progress = [m for m in messages if "generation progress:" in m]
        assert progress and re.search(r"(\d+)/\1 rows \(100%\)", progress[-1]), progress
        assert all("tok/s" in m and "ETA" in m for m in progress)
        for rec in records:
            meta = rec.asset_materialization.metadata
            assert meta["tokens_per_s"].value > 0 and meta["generation_seconds"].value > 0
            assert meta["new_tokens"].value > 0
