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
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import torch

from bt_assets.lib.chunkstore import ChunkStore, ChunkStoreError, atomic_write_bytes
from bt_assets.lib.engine import Request, SamplingConfig, generate
from bt_assets.lib.engine_options import EngineOptions
from bt_assets.lib.hooks import HookState, decoder_layers, scale_table
from bt_assets.lib.interventions import Intervention, fingerprint_items, intervention_tables
from bt_assets.lib.progress import ProgressLog
from bt_assets.lib.streaming import by_chunk

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
    ``interventions``: the other kinds (heads, mean, steer, token_ban; ``bt_assets.lib.interventions``),
    also decode-only; empty for every cell that has none (and then not in the fingerprint).
    """

    key: str
    variant: str
    condition: str
    prompts: pl.DataFrame  # example_id, prompt, prompt_hash, prompt_tokens
    scales: Mapping[tuple[str, int], float] = field(default_factory=dict)
    interventions: tuple[Intervention, ...] = ()


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


@dataclass(frozen=True)
class GenerationStore:
    """Where one generation asset keeps its cells: ``root/<cell key>/<fingerprint>/chunk-NNNNN.parquet``.

    Built once per asset from the profile; owns the chunk layout (``chunk_problems`` problems of every
    cell per chunk, ``samples`` completions per problem) and the fingerprint that names a cell's chunks:
    everything that determines its tokens (model identity, sampling, samples, chunk layout, condition,
    scales, prompts). Batch size, code version and unrelated profile keys are deliberately not in it:
    they do not change the tokens, so changing them must not throw finished generations away.
    """

    root: Path
    identity: Mapping[str, object]
    sampling: SamplingConfig
    samples: int
    chunk_problems: int
    add_bos: bool

    def fingerprint(self, cell: Cell) -> str:
        # interventions only when present: other cells keep their fingerprints (their chunk directories)
        extra = {"interventions": fingerprint_items(cell.interventions)} if cell.interventions else {}
        blob = json.dumps(
            {
                **extra,
                "model": dict(self.identity),
                "sampling": self.sampling.__dict__,
                "samples": self.samples,
                "chunk_problems": self.chunk_problems,
                "condition": cell.condition,
                "scales": sorted((c, int(layer), float(s)) for (c, layer), s in cell.scales.items()),
                "prompts": cell.prompts.sort("example_id")["prompt_hash"].to_list(),
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def chunk_store(self, cell: Cell) -> ChunkStore:
        """The chunk store of a cell under its current fingerprint."""
        return ChunkStore(self.root, cell.key, self.fingerprint(cell))

    def chunks(self, cell: Cell) -> list[pl.DataFrame]:
        """The cell's prompts in chunk order (by example_id, ``chunk_problems`` per chunk)."""
        ordered = cell.prompts.sort("example_id")
        return [ordered.slice(i, self.chunk_problems) for i in range(0, ordered.height, self.chunk_problems)]

    def verify(self, cell: Cell) -> list[str]:
        """Problems of a finished cell (empty = intact): no or bad manifest, a chunk count other than the
        prompts need, a missing chunk, or a chunk whose size/sha256 differs from the manifest (names the
        file)."""
        store = self.chunk_store(cell)
        problems = store.verify()
        want = len(self.chunks(cell))
        m = None if problems else store.manifest()
        if m is not None and m.get("n_chunks") != want:
            problems.append(
                f"manifest {store.manifest_path} lists {m.get('n_chunks')} chunks, expected {want}"
            )
        return problems

    def read(self, cells: Sequence[Cell]) -> pl.DataFrame:
        """Every completion of finished cells; raises ChunkStoreError naming the bad files of a cell that
        does not verify."""
        frames = []
        for cell in cells:
            problems = self.verify(cell)
            if problems:
                raise ChunkStoreError(
                    f"cell {cell.key} of {self.root.name} is incomplete or corrupt: {'; '.join(problems)}. "
                    f"Rematerialize that partition of {self.root.name}: bad chunks are moved aside and "
                    "regenerated, intact ones reused"
                )
            frames.append(self.chunk_store(cell).read_all(len(self.chunks(cell))))
        return pl.concat(frames) if frames else pl.DataFrame(schema=GENERATION_SCHEMA)

    def hook_counts(self, cells: Sequence[Cell]) -> pl.DataFrame:
        """Hook calls per (cell, phase, component, layer) over every chunk of each cell."""
        rows = []
        for cell in cells:
            for path in sorted(self.chunk_store(cell).directory.glob(f"chunk-*{HOOKS_SUFFIX}")):
                rows += [{"cell": cell.key, **r} for r in json.loads(path.read_text())]
        if not rows:
            return pl.DataFrame(schema=HOOK_COUNT_SCHEMA)
        return (
            pl.DataFrame(rows, schema=HOOK_COUNT_SCHEMA)
            .group_by("cell", "phase", "component", "layer")
            .agg(pl.col("calls").sum(), pl.col("applied").sum())
            .sort("cell", "phase", "component", "layer")
        )

    def run(
        self,
        model: torch.nn.Module,
        tokenizer,
        cells: Sequence[Cell],
        *,
        batch_size: int | None,
        eos_ids: Sequence[int],
        provenance: Mapping[str, str],
        hook_state: HookState | None = None,
        log: Callable[[str], None] = print,
        progress: Callable[[str], None] | None = None,
        progress_every_s: float = 10.0,
        prompt_width: int = 0,
        options: EngineOptions | None = None,
    ) -> dict[str, CellReport]:
        """Generate every missing chunk of every cell together; return a report per cell (rows, tok/s,
        truncation). All pending cells decode in the same batches (conditions as per-row scales).

        ``progress`` (e.g. a Dagster ``context.log.info``) gets a line with rows done / to do, tokens,
        tok/s and ETA after the first batch, then at most every ``progress_every_s`` seconds, and after
        the last. ``prompt_width``: the engine's common left-padded prompt width (the longest prompt of
        the asset's whole prompt table, so that a chunk's tokens do not depend on which cells share its
        run). ``options``: the engine's device choices (None: the defaults of the model's device).
        """
        n_layers = len(decoder_layers(model))
        scales = scale_table([c.scales for c in cells], n_layers)
        tables = intervention_tables(model, [c.interventions for c in cells])  # None: no cell has any
        if tables is not None:  # intervention cells always count their hooks (a sidecar per chunk)
            hook_state = hook_state if hook_state is not None else HookState.empty()
        if hook_state is not None:
            hook_state.tables = tables
        stores = [self.chunk_store(c) for c in cells]
        chunked = [self.chunks(c) for c in cells]
        n_chunks = max(len(ch) for ch in chunked)
        reports = {
            c.key: CellReport(c.key, path=str(s.directory)) for c, s in zip(cells, stores, strict=True)
        }
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
        sidecar = HOOKS_SUFFIX if hook_state is not None else None
        for c, s, ch in zip(cells, stores, chunked, strict=True):  # never resume from a bad chunk
            for k, why in s.unusable([x.height * self.samples for x in ch], sidecar).items():
                log(f"WARNING not reusing {why}; moved aside to {s.quarantine(k).name}, regenerating it")
                reports[c.key].chunks_discarded += 1
        total_pending = sum(
            not s.done(k) for s, ch in zip(stores, chunked, strict=True) for k in range(len(ch))
        )
        log(f"{len(cells)} cells, {n_chunks} chunks each; {total_pending} cell-chunks to generate")
        tracker = ProgressLog(
            progress,
            sum(
                x.height * self.samples
                for s, ch in zip(stores, chunked, strict=True)
                for k, x in enumerate(ch)
                if not s.done(k)
            ),
            progress_every_s,
        )
        work: dict[int, tuple[list[int], list[Request]]] = {}  # chunk -> (pending cells, requests)
        for k in range(n_chunks):
            pending = [
                i
                for i, (s, ch) in enumerate(zip(stores, chunked, strict=True))
                if k < len(ch) and not s.done(k)
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
                    prompt_ids=tuple(encode_prompt(tokenizer, row["prompt"], self.add_bos)),
                    tag=(i, row),
                )
                for i in pending
                for row in chunked[i][k].iter_rows(named=True)
                for s in range(self.samples)
            ]
            work[k] = (pending, requests)
        opts = options or EngineOptions.for_device(next(model.parameters()).device)
        kw = {"batch_size": batch_size, "hook_state_out": hook_state, "progress": tracker.batch_done}
        kw |= {"prompt_width": prompt_width, "options": opts}
        counts = (lambda: Counter(hook_state.cell_counts)) if hook_state is not None else Counter
        before = {i: counts() for i in range(len(cells))}  # hook counts at each cell's last chunk write
        stream = by_chunk(
            {k: reqs for k, (_, reqs) in work.items()},
            lambda reqs: generate(model, reqs, scales, self.sampling, eos_ids, pad_id, **kw),
            together=opts.scheduler == "continuous",  # rows of later chunks fill freed slots
            call_done=tracker.chunk_done,
        )
        for k, done, elapsed in stream:
            pending = work[k][0]
            by_cell: dict[int, list[dict]] = {i: [] for i in pending}
            for comp in done:
                i, row = comp.request.tag
                by_cell[i].append(_row(cells[i], row, comp, tokenizer, self.sampling.seed, provenance))
            new_tokens = sum(len(c.token_ids) + (c.finish_reason == "stop") for c in done)
            for i in pending:
                df = pl.DataFrame(by_cell[i], schema=GENERATION_SCHEMA).sort("example_id", "sample_id")
                if hook_state is not None:  # the sidecar first: the chunk file is what marks chunk k done
                    _write_hook_counts(stores[i], k, i, hook_state.cell_counts - before[i])
                    before[i] = counts()
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
