"""Sampling completions for whole cells (variant x condition, or sweep cells) into resumable chunks.

A cell is one prompt set under one ablation condition. All pending cells of a run decode together:
chunk k holds problems [k*chunk_problems, (k+1)*chunk_problems) of every cell, their rows share one
batch (conditions as per-row scales), and each cell's chunk is written atomically when done (its
hook-count sidecar first). A rerun skips the chunks already on disk that are intact and regenerates the
rest, so a crash or kill loses at most the chunk in flight.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import torch

from bt_assets.lib.chunkstore import ChunkStore, ChunkStoreError, atomic_write_bytes
from bt_assets.lib.engine import Request, SamplingConfig, generate
from bt_assets.lib.hooks import HookState, decoder_layers, scale_table

GENERATION_SCHEMA = {
    "example_id": pl.Int64,
    "sample_id": pl.Int64,
    "variant": pl.String,
    "condition": pl.String,
    "cell": pl.String,
    "prompt_hash": pl.String,
    "prompt_tokens": pl.Int64,
    "completion": pl.String,
    "completion_token_ids": pl.List(pl.Int64),
    "completion_tokens": pl.Int64,
    "finish_reason": pl.String,
    "seed": pl.Int64,
    "model_id": pl.String,
    "profile_hash": pl.String,
    "code_version": pl.String,
}
HOOKS_SUFFIX = ".hooks.json"  # per-chunk hook-call counts beside chunk-NNNNN.parquet (sweep cells)


@dataclass(frozen=True)
class Cell:
    """One partition of generations: a prompt set (one variant) under one ablation condition.

    ``scales`` maps (component, layer) to the factor its output is multiplied by at every decode
    step (decode-only: the prompt prefill is never ablated); empty = the unhooked baseline.
    """

    key: str
    variant: str
    condition: str
    prompts: pl.DataFrame  # example_id, prompt, prompt_hash, prompt_tokens
    scales: Mapping[tuple[str, int], float] = field(default_factory=dict)


@dataclass
class CellReport:
    key: str
    rows: int = 0
    new_rows: int = 0
    chunks_reused: int = 0
    chunks_written: int = 0
    chunks_discarded: int = 0  # damaged chunks found on disk, moved aside and regenerated
    new_tokens: int = 0
    seconds: float = 0.0
    truncated: int = 0
    path: str = ""

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


def encode_prompt(tokenizer, prompt: str, add_bos: bool) -> list[int]:
    """Token ids the model sees for a prompt (BOS only if the profile asks and the tokenizer has one)."""
    return list(tokenizer(prompt, add_special_tokens=add_bos)["input_ids"])


def cell_fingerprint(
    cell: Cell, identity: Mapping[str, object], sampling: SamplingConfig, samples: int, chunk_problems: int
) -> str:
    """Hash of everything that determines a cell's tokens (model identity, sampling, condition, prompts).

    Batch size, code version and unrelated profile keys are deliberately not in it: they do not change
    the tokens, so changing them must not throw finished generations away.
    """
    blob = json.dumps(
        {
            "model": dict(identity),
            "sampling": sampling.__dict__,
            "samples": samples,
            "chunk_problems": chunk_problems,
            "condition": cell.condition,
            "scales": sorted((c, int(layer), float(s)) for (c, layer), s in cell.scales.items()),
            "prompts": cell.prompts.sort("example_id")["prompt_hash"].to_list(),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _chunks(prompts: pl.DataFrame, chunk_problems: int) -> list[pl.DataFrame]:
    ordered = prompts.sort("example_id")
    return [ordered.slice(i, chunk_problems) for i in range(0, ordered.height, chunk_problems)]


def run_cells(
    model: torch.nn.Module,
    tokenizer,
    cells: Sequence[Cell],
    *,
    store_root: Path,
    sampling: SamplingConfig,
    samples: int,
    chunk_problems: int,
    batch_size: int,
    eos_ids: Sequence[int],
    add_bos: bool,
    identity: Mapping[str, object],
    provenance: Mapping[str, str],
    hook_state: HookState | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[str], None] | None = None,
    progress_every_s: float = 10.0,
    prompt_width: int = 0,
) -> dict[str, CellReport]:
    """Generate every missing chunk of every cell; return a report per cell (rows, tok/s, truncation).

    ``progress`` (e.g. a Dagster ``context.log.info``) gets a line with rows done / to do, tokens, tok/s
    and ETA after the first batch, then at most every ``progress_every_s`` seconds, and after the last.
    ``prompt_width``: the engine's common left-padded prompt width (the longest prompt of the asset's
    whole prompt table, so that a chunk's tokens do not depend on which cells share its run).
    """
    n_layers = len(decoder_layers(model))
    scales = scale_table([c.scales for c in cells], n_layers)
    stores = [cell_store(store_root, c, identity, sampling, samples, chunk_problems) for c in cells]
    chunked = [_chunks(c.prompts, chunk_problems) for c in cells]
    n_chunks = max(len(ch) for ch in chunked)
    reports = {c.key: CellReport(c.key, path=str(s.directory)) for c, s in zip(cells, stores, strict=True)}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    sidecar = HOOKS_SUFFIX if hook_state is not None else None
    for c, s, ch in zip(cells, stores, chunked, strict=True):  # never resume from a bad chunk
        for k, why in s.unusable([x.height * samples for x in ch], sidecar).items():
            log(f"WARNING not reusing {why}; moved aside to {s.quarantine(k).name}, regenerating it")
            reports[c.key].chunks_discarded += 1
    total_pending = sum(not s.done(k) for s, ch in zip(stores, chunked, strict=True) for k in range(len(ch)))
    log(f"{len(cells)} cells, {n_chunks} chunks each; {total_pending} cell-chunks to generate")
    tracker = ProgressLog(
        progress,
        sum(
            x.height * samples
            for s, ch in zip(stores, chunked, strict=True)
            for k, x in enumerate(ch)
            if not s.done(k)
        ),
        progress_every_s,
    )
    for k in range(n_chunks):
        pending = [
            i for i, (s, ch) in enumerate(zip(stores, chunked, strict=True)) if k < len(ch) and not s.done(k)
        ]
        for i in range(len(stores)):
            if k < len(chunked[i]) and i not in pending:
                reports[cells[i].key].chunks_reused += 1
        if not pending:
            continue
        requests = [
            Request(
                problem_key=int(row["example_id"]),
                sample_id=s,
                condition=i,
                prompt_ids=tuple(encode_prompt(tokenizer, row["prompt"], add_bos)),
                tag=(i, row),
            )
            for i in pending
            for row in chunked[i][k].iter_rows(named=True)
            for s in range(samples)
        ]
        before = Counter(hook_state.cell_counts) if hook_state is not None else Counter()
        t0 = time.perf_counter()
        done = [
            c
            for batch in generate(
                model,
                requests,
                scales,
                sampling,
                eos_ids=eos_ids,
                pad_id=pad_id,
                batch_size=batch_size,
                hook_state_out=hook_state,
                progress=tracker.batch_done,
                prompt_width=prompt_width,
            )
            for c in batch
        ]
        elapsed = time.perf_counter() - t0
        tracker.chunk_done()
        by_cell: dict[int, list[dict]] = {i: [] for i in pending}
        for comp in done:
            i, row = comp.request.tag
            by_cell[i].append(_row(cells[i], row, comp, tokenizer, sampling.seed, provenance))
        new_tokens = sum(len(c.token_ids) + (c.finish_reason == "stop") for c in done)
        for i in pending:
            df = pl.DataFrame(by_cell[i], schema=GENERATION_SCHEMA).sort("example_id", "sample_id")
            if hook_state is not None:  # the sidecar first: the chunk file is what marks chunk k done
                _write_hook_counts(stores[i], k, i, hook_state.cell_counts - before)
            stores[i].write(k, df)
            rep = reports[cells[i].key]
            rep.chunks_written += 1
            rep.new_rows += df.height
            share = df.height / max(len(done), 1)
            rep.new_tokens += int(df["completion_tokens"].sum())
            rep.seconds += elapsed * share
        log(
            f"chunk {k + 1}/{n_chunks}: {len(done)} completions, {new_tokens} tokens in {elapsed:.1f}s "
            f"({new_tokens / max(elapsed, 1e-9):.0f} tok/s)"
        )
    for c, s, ch in zip(cells, stores, chunked, strict=True):
        s.finalize(len(ch), {"cell": c.key, **provenance})
        rep = reports[c.key]
        df = s.read_all(len(ch))
        rep.rows = df.height
        rep.truncated = int((df["finish_reason"] == "length").sum())
    return reports


class ProgressLog:
    """Throttled progress lines of a long generation: rows done of the run's total, tokens, tok/s, ETA.

    ``batch_done`` takes the engine's per-batch progress dicts (cumulative within one ``generate`` call);
    ``chunk_done`` closes that call. A line goes out after the first batch, then when ``every_s`` seconds
    have passed since the last line, and when the last row is done."""

    def __init__(
        self,
        emit: Callable[[str], None] | None,
        rows_total: int,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.emit, self.rows_total, self.every_s, self.clock = emit, rows_total, every_s, clock
        self.start = clock()
        self.last: float | None = None
        self.rows = self.tokens = 0  # finished generate calls
        self.rows_now = self.tokens_now = 0  # including the call in flight
        self.lines = 0

    def batch_done(self, event: Mapping[str, float]) -> None:
        self.rows_now = self.rows + int(event["rows_done"])
        self.tokens_now = self.tokens + int(event["tokens"])
        now = self.clock()
        due = self.last is None or now - self.last >= self.every_s or self.rows_now >= self.rows_total
        if self.emit is not None and due:
            self.last = now
            self.lines += 1
            self.emit(self.line(now - self.start))

    def chunk_done(self) -> None:
        self.rows, self.tokens = self.rows_now, self.tokens_now

    def line(self, elapsed: float) -> str:
        rate = self.rows_now / elapsed if elapsed > 0 else 0.0
        eta = (self.rows_total - self.rows_now) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.rows_now / self.rows_total if self.rows_total else 100.0
        return (
            f"generation progress: {self.rows_now}/{self.rows_total} rows ({pct:.0f}%), "
            f"{self.tokens_now} tokens, {self.tokens_now / max(elapsed, 1e-9):.1f} tok/s, "
            f"elapsed {_hms(elapsed)}, ETA {_hms(eta)}"
        )


def _hms(seconds: float) -> str:
    if seconds != seconds:  # nan: no rate yet
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _row(cell: Cell, prompt_row: dict, comp, tokenizer, seed: int, provenance: Mapping[str, str]) -> dict:
    return {
        "example_id": int(prompt_row["example_id"]),
        "sample_id": comp.request.sample_id,
        "variant": cell.variant,
        "condition": cell.condition,
        "cell": cell.key,
        "prompt_hash": prompt_row["prompt_hash"],
        "prompt_tokens": len(comp.request.prompt_ids),
        "completion": tokenizer.decode(comp.token_ids, skip_special_tokens=True),
        "completion_token_ids": list(comp.token_ids),
        "completion_tokens": len(comp.token_ids) + (comp.finish_reason == "stop"),
        "finish_reason": comp.finish_reason,
        "seed": seed,
        "model_id": str(provenance.get("model_id", "")),
        "profile_hash": str(provenance.get("profile_hash", "")),
        "code_version": str(provenance.get("code_version", "")),
    }


def cell_store(
    store_root: Path,
    cell: Cell,
    identity: Mapping[str, object],
    sampling: SamplingConfig,
    samples: int,
    chunk_problems: int,
) -> ChunkStore:
    """The chunk store of a cell under its current fingerprint."""
    return ChunkStore(
        store_root, cell.key, cell_fingerprint(cell, identity, sampling, samples, chunk_problems)
    )


def verify_cell(
    store_root: Path,
    cell: Cell,
    identity: Mapping[str, object],
    sampling: SamplingConfig,
    samples: int,
    chunk_problems: int,
) -> list[str]:
    """Problems of a finished cell (empty = intact): no or bad manifest, a chunk count other than the
    prompts need, a missing chunk, or a chunk whose size/sha256 differs from the manifest (names the file)."""
    store = cell_store(store_root, cell, identity, sampling, samples, chunk_problems)
    problems = store.verify()
    want = len(_chunks(cell.prompts, chunk_problems))
    m = None if problems else store.manifest()
    if m is not None and m.get("n_chunks") != want:
        problems.append(f"manifest {store.manifest_path} lists {m.get('n_chunks')} chunks, expected {want}")
    return problems


def read_cell(
    store_root: Path,
    cell: Cell,
    identity: Mapping[str, object],
    sampling: SamplingConfig,
    samples: int,
    chunk_problems: int,
) -> pl.DataFrame:
    """Read a finished cell; raises ChunkStoreError naming the bad files if it does not verify."""
    problems = verify_cell(store_root, cell, identity, sampling, samples, chunk_problems)
    if problems:
        raise ChunkStoreError(
            f"cell {cell.key} of {Path(store_root).name} is incomplete or corrupt: {'; '.join(problems)}. "
            f"Rematerialize that partition of {Path(store_root).name}: bad chunks are moved aside and "
            "regenerated, intact ones reused"
        )
    store = cell_store(store_root, cell, identity, sampling, samples, chunk_problems)
    return store.read_all(len(_chunks(cell.prompts, chunk_problems)))


HOOK_COUNT_SCHEMA = {
    "cell": pl.String,
    "phase": pl.String,
    "component": pl.String,
    "layer": pl.Int64,
    "calls": pl.Int64,
    "applied": pl.Int64,
}


def _write_hook_counts(store: ChunkStore, index: int, condition: int, delta: Counter) -> None:
    """Hook calls of one chunk for one cell, beside the chunk (summed over chunks = the whole cell)."""
    rows: dict[tuple, dict] = {}
    for (cond, phase, comp, layer, kind), n in delta.items():
        if cond == condition:
            row = rows.setdefault(
                (phase, comp, layer),
                {"phase": phase, "component": comp, "layer": layer, "calls": 0, "applied": 0},
            )
            row[kind] += n
    path = store.directory / f"chunk-{index:05d}{HOOKS_SUFFIX}"
    atomic_write_bytes(
        path,
        json.dumps(sorted(rows.values(), key=lambda r: (r["phase"], r["component"], r["layer"]))).encode(),
    )


def read_hook_counts(
    store_root: Path,
    cells: Sequence[Cell],
    identity: Mapping[str, object],
    sampling: SamplingConfig,
    samples: int,
    chunk_problems: int,
) -> pl.DataFrame:
    """Hook calls per (cell, phase, component, layer) over every chunk of each cell."""
    rows = []
    for cell in cells:
        store = cell_store(store_root, cell, identity, sampling, samples, chunk_problems)
        for path in sorted(store.directory.glob(f"chunk-*{HOOKS_SUFFIX}")):
            rows += [{"cell": cell.key, **r} for r in json.loads(path.read_text())]
    if not rows:
        return pl.DataFrame(schema=HOOK_COUNT_SCHEMA)
    return (
        pl.DataFrame(rows, schema=HOOK_COUNT_SCHEMA)
        .group_by("cell", "phase", "component", "layer")
        .agg(pl.col("calls").sum(), pl.col("applied").sum())
        .sort("cell", "phase", "component", "layer")
    )
