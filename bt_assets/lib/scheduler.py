"""Continuous batching: a finished row's slot is refilled from the queue at the next check, not at the end
of its batch (``EngineOptions.scheduler == "continuous"``; ``engine.generate`` dispatches here).

Every completion stays the same function of its keys as on the static path: the same prefill (distinct
prompts, left-padded to the run's common width, the row floor), the same counter-based uniforms of
(seed, problem, sample, step), per-row conditions and EOS, decode-only hooks. What changes is where a
row sits. One KV slab (``kv_cache.RowSlab``: rows x (width + max_new_tokens) positions, model dtype) is
allocated once, sized by ``batch_plan``; a cohort of rows admitted together is prefilled in one batch
and lives in contiguous slab rows (a ``Segment``: same prompt width, same step). Decoding runs every
live row through the linear layers in one batch; attention (``kv_cache.cohort_attention``) runs sdpa
once per segment over exactly that segment's filled columns: no row attends over another row's length,
and each row's attention is the static path's call on the same columns (row-exact on CPU, rule 1 of
``engine``). A row that finishes is dropped by moving its segment's last row into its slot (one row's
filled K/V, not the whole slab), so segments stay contiguous; free slots are refilled in batches of at
least ``refill_min`` rows (few segments, one prefill per batch). The CPU row floor (rule 2) pads the
forward, not the slab: below ``min_decode_rows`` live rows the last row is repeated and its repeats'
outputs are dropped. Measured (bt_assets_tests/test_continuous.py, bench/continuous.py): in fp32 on CPU
the completions equal the static path's token for token (no near-tie exceptions).

An out-of-memory error in a step or a prefill halves the live rows: the newest rows go back to the front
of the queue (they restart: their tokens are a function of their keys) and nothing finished is lost.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from bt_assets.lib import kv_cache
from bt_assets.lib.batch_plan import KVShape
from bt_assets.lib.engine import Completion, Request, SamplingConfig, _attention_implementation, _left_pad
from bt_assets.lib.engine_options import EngineOptions, attention_kernel
from bt_assets.lib.hooks import HookState, ablation_hooks, decoder_layers
from bt_assets.lib.intervention_hooks import first_token_logits
from bt_assets.lib.kv_cache import COHORT_ATTENTION, RowSlab
from bt_assets.lib.progress import progress_event
from bt_assets.lib.sampling import as_int64, sample_logits, uniforms


@dataclass
class Segment:
    """Contiguous slab rows [start, stop) admitted together: one prompt width, one decode step."""

    start: int
    stop: int
    width: int  # prompt columns (left-padded)
    step: int  # tokens sampled so far minus one: the next forward writes column width + step


class ContinuousDecoder:
    """The live state of a continuous run: slab, segments, per-slot tensors, the queue of requests."""

    def __init__(
        self,
        model: nn.Module,
        requests: Sequence[Request],
        state: HookState,
        sampling: SamplingConfig,
        eos_ids: Sequence[int],
        pad_id: int,
        options: EngineOptions,
        rows: int,
        prompt_width: int,
    ) -> None:
        dev = next(model.parameters()).device
        self.model, self.requests, self.state, self.sampling = model, requests, state, sampling
        self.pad_id, self.opts, self.dev, self.steps = pad_id, options, dev, sampling.max_new_tokens
        self.cap = self.rows = max(1, min(rows, len(requests)))  # live-row limit (halved by OOM)
        self.refill_min = max(1, self.cap // max(1, options.refill_fraction))
        longest = max(len(r.prompt_ids) for r in requests)
        self.width_floor = max(prompt_width, options.min_decode_rows)
        capacity = max(self.width_floor, longest) + self.steps
        dtype = next(model.parameters()).dtype
        self.slab = RowSlab(KVShape.of(model), self.rows, capacity, dtype, dev)
        self.eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long, device=dev)
        z = torch.zeros(self.rows, dtype=torch.long, device=dev)
        self.key, self.sample_id, self.cond, self.step, self.pos, self.last = (z.clone() for _ in range(6))
        self.stop = torch.full((self.rows,), self.steps, dtype=torch.long, device=dev)
        self.tokens = torch.full((self.rows, self.steps), -1, dtype=torch.long, device=dev)
        self.logits: torch.Tensor | None = None  # (rows, V) next-token logits per slot
        self.req: list[int | None] = [None] * self.rows  # request index of each slot
        self.segments: list[Segment] = []
        first: dict[tuple[int, ...], int] = {}  # a prompt's rows queue together (one prefill), in order
        for i, r in enumerate(requests):
            first.setdefault(r.prompt_ids, i)
        self.queue = deque(sorted(range(len(requests)), key=lambda i: (first[requests[i].prompt_ids], i)))
        self.live = z[:0]
        self.done_rows = self.done_tokens = self.ooms = self.ticks = 0

    # ------------------------------------------------------------------ admission (batched prefill)
    def admit(self) -> None:
        """Prefill the next requests into free slots when enough are free (or too few rows are live); a
        prefill that runs out of memory with no row live is retried with half the rows."""
        self._admit()
        while not len(self.live) and self.queue:
            self._admit()

    def _admit(self) -> None:
        n_live = len(self.live)
        free = self.cap - n_live
        if not self.queue or free <= 0 or (free < self.refill_min and n_live >= self.opts.min_decode_rows):
            return
        n = min(free, len(self.queue))
        prompt = self.requests[self.queue[n - 1]].prompt_ids
        if n < len(self.queue) and self.requests[self.queue[n]].prompt_ids == prompt:
            # do not split a prompt's rows over two prefills when others can go first: back off to its start
            whole = next(
                (j for j in range(n - 1, -1, -1) if self.requests[self.queue[j]].prompt_ids != prompt), -1
            )
            n = whole + 1 if whole >= 0 else n
        take = [self.queue.popleft() for _ in range(n)]
        try:
            logits, masks, width = self._prefill([self.requests[i] for i in take])
        except torch.OutOfMemoryError:
            self.queue.extendleft(reversed(take))
            self._out_of_memory(admitting=len(take))
            return
        if self.logits is None:
            self.logits = logits.new_empty(self.rows, logits.shape[-1])
        runs = self._free_runs(len(take))
        slots = [s for run in runs for s in run]
        idx = torch.tensor(slots, device=self.dev)
        for layer, (pk, pv) in zip(self.slab.layers, self._prefill_kv, strict=True):
            layer.k[idx, :, :width], layer.v[idx, :, :width] = pk, pv
        self.slab.attend[idx] = True
        self.slab.attend[idx, 0, 0, :width] = masks.bool()
        reqs = [self.requests[i] for i in take]
        self.key[idx] = as_int64([r.problem_key for r in reqs]).to(self.dev)
        self.sample_id[idx] = torch.tensor([r.sample_id for r in reqs], device=self.dev)
        self.cond[idx] = torch.tensor([r.condition for r in reqs], device=self.dev)
        self.pos[idx] = masks.sum(-1) - 1
        self.step[idx], self.stop[idx], self.tokens[idx] = 0, self.steps, -1
        self.logits[idx] = logits
        for s, i in zip(slots, take, strict=True):
            self.req[s] = i
        self.segments += [Segment(r[0], r[-1] + 1, width, 0) for r in runs]
        self._relayout()

    def _free_runs(self, n: int) -> list[list[int]]:
        """``n`` free slots as contiguous runs, largest gaps first (each run is one new segment: fewer
        runs, fewer sdpa calls per layer)."""
        used = {s for seg in self.segments for s in range(seg.start, seg.stop)}
        gaps: list[list[int]] = []
        for s in range(self.rows):
            if s in used:
                continue
            if gaps and gaps[-1][-1] + 1 == s:
                gaps[-1].append(s)
            else:
                gaps.append([s])
        runs = []
        for gap in sorted(gaps, key=len, reverse=True):
            if n > 0:
                runs.append(gap[:n])
                n -= len(runs[-1])
        return runs

    def _prefill(self, reqs: list[Request]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The static path's prefill of ``reqs`` (distinct prompts once, common width, the row floor):
        first-token logits (n, V), prompt masks (n, W) and the width W; the K/V per layer in
        ``_prefill_kv`` as (n, Hkv, W, D) copies for the rows."""
        floor = self.opts.min_decode_rows
        distinct: dict[tuple[int, ...], int] = {}
        src = torch.tensor([distinct.setdefault(r.prompt_ids, len(distinct)) for r in reqs], device=self.dev)
        ids, mask = (t.to(self.dev) for t in _left_pad(list(distinct), self.pad_id, self.width_floor))
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = kv_cache.slab_cache(len(self.slab.layers), ids.shape[1])
        self.state.row_condition = torch.tensor([r.condition for r in reqs], device=self.dev)
        self.state.positions, self.state.phase = None, "prefill"
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=-(-floor // ids.shape[0]),
        )
        self._prefill_kv = [(layer.k_buf[src], layer.v_buf[src]) for layer in cache.layers]
        # a token ban covers the first token too (its rows' conditions are state.row_condition)
        logits = first_token_logits(self.state, out.logits[:, -1][src])
        return logits, mask[src], ids.shape[1]

    # ------------------------------------------------------------------ one decode step
    def sample(self) -> None:
        """Sample every live row's next token at its own step; record it and each row's first EOS."""
        live, s = self.live, self.sampling
        t = self.step[live]
        u = uniforms(s.seed, self.key[live], self.sample_id[live], t)
        nxt = sample_logits(self.logits[live], u, s.temperature, s.top_p, s.top_k)
        self.tokens[live, t] = nxt
        if self.eos.numel():
            first = self.stop[live]
            self.stop[live] = torch.where((first == self.steps) & torch.isin(nxt, self.eos), t, first)
        self.last[live] = nxt

    def forward(self) -> None:
        """Feed the sampled tokens of every live row (the row floor pads the batch with repeats)."""
        live, b = self.live, len(self.live)
        ext = self._ext
        slots = live[ext] if ext is not None else live
        self.slab.slots = slots
        self.slab.cols = self.cols
        self.state.phase = "decode"
        with _attention_implementation(self.model, COHORT_ATTENTION):
            out = self.model(
                input_ids=self.last[slots].unsqueeze(1),
                position_ids=(self.pos[slots] + 1).unsqueeze(1),
                past_key_values=self.slab,
                use_cache=True,
                logits_to_keep=1,
                bt_cohorts=self.slab,
            )
        self.logits[live] = out.logits[:b, -1]
        self.pos[live] += 1
        self.step[live] += 1
        self.cols = self.cols + 1
        for seg in self.segments:
            seg.step += 1
        self.slab.plan = [(q_lo, q_hi, lo, hi, n + 1) for q_lo, q_hi, lo, hi, n in self.slab.plan]
        self.slab.longest += 1

    # ------------------------------------------------------------------ finished rows, layout
    def finish(self) -> list[Completion]:
        """The completions of rows that stopped or reached the cap (one host sync); their slots are freed
        by moving each segment's last rows into them."""
        live = self.live
        done = (self.stop[live] < self.steps) | (self.step[live] >= self.steps - 1)
        if not bool(done.any()):
            return []
        fin = live[done]
        toks, stops = self.tokens[fin].tolist(), self.stop[fin].tolist()
        out = []
        for slot, row, end in zip(fin.tolist(), toks, stops, strict=True):
            req = self.requests[self.req[slot]]
            out.append(Completion(req, row[:end], "stop" if end < self.steps else "length"))
            self.req[slot] = None
        self.done_rows += len(out)
        self.done_tokens += sum(c.n_tokens for c in out)
        self._compact()
        return out

    def _compact(self, evict: int = 0) -> None:
        """Close the holes of freed slots (and free the last ``evict`` live rows, newest segments first,
        their requests back to the front of the queue): each segment's last rows move into its holes."""
        holes, tails = [], []
        for seg in sorted(self.segments, key=lambda g: -g.start):
            rows = list(range(seg.start, seg.stop))
            while evict and rows:  # back to the queue; they restart from their keys
                slot = rows.pop()
                self.queue.appendleft(self.req[slot])
                self.req[slot], evict = None, evict - 1
            keep = [s for s in rows if self.req[s] is not None]
            n = len(keep)
            holes += [s for s in rows[:n] if self.req[s] is None]
            tails += [s for s in rows[n:] if self.req[s] is not None]
            seg.stop = seg.start + n
        if holes:
            self._move(holes, tails, max(g.width + g.step + 1 for g in self.segments))
        self.segments = sorted((g for g in self.segments if g.stop > g.start), key=lambda g: g.start)
        self._relayout()

    def _move(self, dst: list[int], src: list[int], cols: int) -> None:
        """Copy rows ``src`` of every per-slot tensor and of the slab (first ``cols`` columns) to ``dst``."""
        d, s = torch.tensor(dst, device=self.dev), torch.tensor(src, device=self.dev)
        for layer in self.slab.layers:
            layer.k[d, :, :cols] = layer.k[s, :, :cols]
            layer.v[d, :, :cols] = layer.v[s, :, :cols]
        for name in ("key", "sample_id", "cond", "step", "pos", "last", "stop", "tokens", "logits"):
            x = getattr(self, name)
            x[d] = x[s]
        self.slab.attend[d] = self.slab.attend[s]
        for a, b in zip(dst, src, strict=True):
            self.req[a], self.req[b] = self.req[b], None

    def _relayout(self) -> None:
        """Per-forward layout after rows moved: live slots, columns to write, the attention plan, the
        row-floor repeats and the hooks' row conditions (a new tensor: hooks cache by identity)."""
        slots, cols, plan, q = [], [], [], 0
        for g in self.segments:
            n = g.stop - g.start
            slots += range(g.start, g.stop)
            cols += [g.width + g.step] * n
            plan.append((q, q + n, g.start, g.stop, g.width + g.step + 1))
            q += n
        self.live = torch.tensor(slots, dtype=torch.long, device=self.dev)
        pad = max(0, self.opts.min_decode_rows - q) if q else 0
        self._ext = None
        if pad:  # the row floor: repeat the last row (its outputs are dropped)
            self._ext = torch.cat([torch.arange(q), torch.full((pad,), q - 1)]).to(self.dev)
            cols += [cols[-1]] * pad
            last = self.segments[-1]
            plan.append((q, q + pad, last.stop - 1, last.stop, last.width + last.step + 1))
        self.cols = torch.tensor(cols, dtype=torch.long, device=self.dev)
        self.slab.plan = plan
        self.slab.longest = max((g.width + g.step for g in self.segments), default=0)
        rows = self.live if self._ext is None else self.live[self._ext]
        self.state.row_condition = self.cond[rows]

    def _out_of_memory(self, admitting: int = 0) -> None:
        """Halve the rows that were running out of memory: the live rows plus the ``admitting`` rows of a
        failed prefill. Live rows beyond the new limit go back to the queue (newest first)."""
        self.ooms += 1
        if self.dev.type == "cuda":
            torch.cuda.empty_cache()
        live = len(self.live)
        if live + admitting <= 1:
            raise torch.OutOfMemoryError("out of memory with a single row")
        self.cap = max(1, (live + admitting) // 2)
        self.refill_min = max(1, self.cap // max(1, self.opts.refill_fraction))
        if live > self.cap:
            self._compact(evict=live - self.cap)

    def decode_until_finished(self) -> list[Completion]:
        """Sample, drop finished rows, step and refill until some rows finish; [] once all are done.

        Finished rows are looked for every ``eos_check_every`` steps and whenever a segment reaches
        the cap (known on the host: no sync); the forward that follows feeds the remaining rows."""
        every, done = self.opts.eos_check_every, []
        self.admit()
        while not done and len(self.live):
            self.sample()
            self.ticks += 1
            if self.ticks % every == 0 or any(g.step >= self.steps - 1 for g in self.segments):
                done = self.finish()
            while len(self.live):
                try:
                    self.forward()
                    break
                except torch.OutOfMemoryError:
                    self._out_of_memory()
            self.admit()
        return done


def generate_continuous(
    model: nn.Module,
    requests: Sequence[Request],
    state: HookState,
    sampling: SamplingConfig,
    eos_ids: Sequence[int],
    pad_id: int,
    *,
    options: EngineOptions,
    rows: int,
    prompt_width: int = 0,
    progress: Callable[[dict], None] | None = None,
) -> Iterator[list[Completion]]:
    """Yield completions as rows finish (in finishing order) with at most ``rows`` rows live; hooks are
    installed while decoding and removed before each yield. Progress events carry ``live_rows``."""
    if not requests:
        return
    if not state.decode_only:
        raise ValueError("continuous batching shares the prompt prefill across conditions: decode_only hooks")
    if len(decoder_layers(model)) != model.config.num_hidden_layers:
        raise ValueError("the model's decoder layers do not match its config")
    dec = ContinuousDecoder(model, requests, state, sampling, eos_ids, pad_id, options, rows, prompt_width)
    t0 = time.perf_counter()
    while True:
        with torch.inference_mode(), ablation_hooks(model, state), attention_kernel(options):
            done = dec.decode_until_finished()
        if not done:
            return
        if progress is not None:
            event = progress_event(dec.done_rows, len(requests), dec.done_tokens, time.perf_counter() - t0)
            live = {"live_rows": len(dec.live), "max_rows": dec.cap, "segments": len(dec.segments)}
            progress({**event, **live, "ooms": dec.ooms})
        yield done
