"""Continuous batching (``bt_assets.lib.scheduler``) on tiny random Qwen2 / Llama models: the same
completions as static batches for the same keys (fp32 on CPU), finished rows replaced by waiting ones,
a simulated out-of-memory error that halves the live rows and loses nothing, progress with live rows,
and ``GenerationStore.run`` writing the same chunks with either scheduler."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import polars as pl
import pytest
import torch

from bt_assets.lib.engine import Completion, EngineOptions, Request, SamplingConfig, generate
from bt_assets.lib.generation import Cell, GenerationStore
from bt_assets.lib.hooks import scale_table
from bt_assets.lib.progress import ProgressLog
from bt_assets.lib.sampling import stable_key
from bt_assets_tests.conftest import EOS_ID, tiny_model

N_LAYERS = 4
STATIC = EngineOptions.for_device("cpu")  # the bit-exact path
CONTINUOUS = replace(STATIC, scheduler="continuous")
SAMPLING = SamplingConfig(temperature=1.0, top_p=0.95, top_k=64, max_new_tokens=24, seed=11)
TABLE = [{}, {("attn", 1): 0.0, ("mlp", 2): 0.5}]
WIDTH = 16  # the run's common prompt width (>= every prompt: rule 3 of the engine docstring)

pytestmark = pytest.mark.slow  # every test here builds a model


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def model(request):
    return tiny_model(request.param)


def requests(n_prompts: int = 8, samples: int = 3) -> list[Request]:
    rng = random.Random(0)
    prompts = [tuple(rng.randrange(49152) for _ in range(rng.randint(3, 12))) for _ in range(n_prompts)]
    return [
        Request(stable_key(f"p{p}"), s, c, prompt, tag=(p, s, c))
        for p, prompt in enumerate(prompts)
        for s in range(samples)
        for c in range(len(TABLE))
    ]


def run(model, reqs, options, rows: int, eos=(), **kw) -> dict[object, Completion]:
    table = scale_table(TABLE, N_LAYERS)
    out = generate(
        model, reqs, table, SAMPLING, eos, EOS_ID, batch_size=rows, prompt_width=WIDTH, options=options, **kw
    )
    return {c.request.tag: c for batch in out for c in batch}


def same(a: dict[object, Completion], b: dict[object, Completion]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].token_ids == b[k].token_ids and a[k].finish_reason == b[k].finish_reason for k in a
    )


def long_tail_eos(model, reqs) -> list[int]:
    """Stop ids that end some rows early and leave others to the cap: a long-tailed length mix."""
    free = run(model, reqs, STATIC, 64)
    counts = Counter(t for c in free.values() for t in c.token_ids[2:])
    return [t for t, _ in counts.most_common(2)]


def test_continuous_equals_static_token_for_token(model):
    """fp32 on CPU: every completion is the same function of its keys under both schedulers, whatever
    the live-row limit, refill batch or EOS-check interval (measured: 48/48 identical; no near-tie
    exceptions are needed on this path)."""
    reqs = requests()
    eos = long_tail_eos(model, reqs)
    want = run(model, reqs, STATIC, 16, eos)
    lengths = sorted(c.n_tokens for c in want.values())
    assert lengths[0] < SAMPLING.max_new_tokens // 2 and lengths[-1] == SAMPLING.max_new_tokens
    shuffled = reqs[:]
    random.Random(2).shuffle(shuffled)
    for rows, rs, opts in (
        (16, reqs, CONTINUOUS),
        (20, shuffled, replace(CONTINUOUS, refill_fraction=2, eos_check_every=3)),
        (64, reqs, CONTINUOUS),
        (5, shuffled, replace(CONTINUOUS, refill_fraction=1)),  # fewer live rows than the row floor
    ):
        assert same(run(model, rs, opts, rows, eos), want), (rows, opts)


def trace_forwards(model, fn):
    """(rows and sequence length of each forward of the model, ``fn()``)."""
    shapes: list[tuple[int, int]] = []
    handle = model.register_forward_pre_hook(
        lambda _m, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        out = fn()
    finally:
        handle.remove()
    return shapes, out


def test_finished_rows_are_replaced(model):
    """16 live rows, 48 requests, early EOS: new rows are prefilled between decode steps while other rows
    keep decoding, every decode step runs the full 16 rows while requests wait, and the run takes far
    fewer decode steps than static batches do."""
    reqs = requests()
    eos = long_tail_eos(model, reqs)
    events: list[dict] = []
    shapes, out = trace_forwards(model, lambda: run(model, reqs, CONTINUOUS, 16, eos, progress=events.append))
    static_shapes, _ = trace_forwards(model, lambda: run(model, reqs, STATIC, 16, eos))
    prefills = [i for i, (_, t) in enumerate(shapes) if t > 1]
    assert len(out) == len(reqs) and len(prefills) >= 3
    assert any(shapes[i - 1][1] == 1 for i in prefills[1:])  # refills interleaved with decoding
    decode_rows = [b for b, t in shapes[: prefills[-1]] if t == 1]
    assert decode_rows and all(b == 16 for b in decode_rows)  # slots never idle while rows wait
    n_decode = sum(t == 1 for _, t in shapes)
    assert n_decode < 0.8 * sum(t == 1 for _, t in static_shapes)
    assert events[-1]["rows_done"] == len(reqs) and all("live_rows" in e for e in events)


class OutOfMemoryOnce:
    """A forward pre-hook that raises ``torch.OutOfMemoryError`` once, at the ``at``-th forward whose
    input has ``seq`` tokens per row (1: a decode step; > 1: a prefill)."""

    def __init__(self, at: int, prefill: bool) -> None:
        self.at, self.prefill, self.seen, self.fired = at, prefill, 0, False
        self.calls = self.fired_at = 0  # forwards seen; forwards that had run when it fired

    def __call__(self, _m, _args, kwargs) -> None:
        self.calls += 1
        if (kwargs["input_ids"].shape[1] > 1) != self.prefill or self.fired:
            return
        self.seen += 1
        if self.seen == self.at:
            self.fired, self.fired_at = True, self.calls - 1
            raise torch.OutOfMemoryError("simulated")


@pytest.mark.parametrize("prefill", [False, True], ids=["in_a_step", "in_a_prefill"])
def test_out_of_memory_halves_rows_and_loses_nothing(model, prefill):
    """An out-of-memory error halves the rows (30 live -> 15; a failed prefill of 30 -> 15: the first
    prefill takes 5 whole prompts of 6 rows, as 32 would split one), evicted rows restart from their
    keys, and every completion equals the run without the error."""
    reqs = requests()
    eos = long_tail_eos(model, reqs)
    want = run(model, reqs, STATIC, 32, eos)
    fault = OutOfMemoryOnce(at=1 if prefill else 5, prefill=prefill)  # the first prefill: 32 rows
    handle = model.register_forward_pre_hook(fault, with_kwargs=True)
    events: list[dict] = []
    try:
        shapes, got = trace_forwards(
            model, lambda: run(model, reqs, CONTINUOUS, 32, eos, progress=events.append)
        )
    finally:
        handle.remove()
    assert fault.fired and same(got, want)
    assert events[-1]["ooms"] == 1 and events[-1]["max_rows"] == 15
    before, after = shapes[: fault.fired_at], shapes[fault.fired_at :]  # the failed forward is in neither
    assert max(b for b, t in after if t == 1) <= 16  # 15 live rows, padded to the row floor
    assert prefill or max(b for b, t in before if t == 1) >= 30


def test_progress_lines_show_live_rows():
    lines: list[str] = []
    log = ProgressLog(lines.append, rows_total=10, every_s=0.0, clock=lambda: 2.0)
    log.start = 0.0
    log.batch_done({"rows_done": 5, "tokens": 100, "live_rows": 7, "max_rows": 8})
    assert lines == [
        "generation progress: 5/10 rows (50%), 100 tokens, 50.0 tok/s, elapsed 0:00:02, ETA 0:00:02, "
        "7 live rows (limit 8)"
    ]


def test_store_writes_the_same_chunks_with_either_scheduler(tmp_path, demo_tokenizer):
    """``GenerationStore.run`` with continuous batching (one engine call over every chunk, each chunk
    written when its last row ends) stores the same rows as with static batches, and hook counts per
    cell that sum to the same decode calls' conditions."""
    prompts = pl.DataFrame(
        {
            "example_id": [0, 1, 2, 3, 4],
            "prompt": ["What is 2 + 3?", "Add 4 and 5.", "Seven minus one?", "Two times six?", "Half of 8?"],
            "prompt_hash": ["a", "b", "c", "d", "e"],
            "prompt_tokens": [8, 5, 4, 5, 5],
        }
    )
    cells = [
        Cell("v=base,c=base", "base", "base", prompts),
        Cell("v=base,c=abl", "base", "abl", prompts, {("mlp", 1): 0.0}),
    ]
    frames = {}
    for name, opts in (("static", STATIC), ("continuous", CONTINUOUS)):
        store = GenerationStore(
            root=tmp_path / name,
            identity={"model": "tiny"},
            sampling=SamplingConfig(temperature=1.0, top_p=0.95, top_k=64, max_new_tokens=12, seed=3),
            samples=2,
            chunk_problems=2,
            add_bos=False,
        )
        reports = store.run(
            tiny_model("llama"),
            demo_tokenizer,
            cells,
            batch_size=16,
            eos_ids=[EOS_ID, 30],
            provenance={},
            log=lambda _m: None,
            prompt_width=16,
            options=opts,
        )
        assert all(r.chunks_written == 3 and r.rows == 10 for r in reports.values())
        frames[name] = store.read(cells).drop("code_version")
    assert frames["static"].equals(frames["continuous"])
