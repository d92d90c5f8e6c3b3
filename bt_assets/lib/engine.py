"""The decoding engine: an own sampling loop over a hooked causal LM.

A batch is rows of (problem, sample, condition). Prompts are left-padded with explicit position ids;
the prompt is prefilled with the hooks in phase "prefill" (decode-only ablations leave it intact), then
one token per step in phase "decode" through the KV cache. Row r's step-t token uses the counter-based
uniform of (seed, problem, sample, t), so outputs do not depend on batch size, order or neighbours,
and conditions of the same (problem, sample) are paired. Each row stops at its own EOS.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from bt_assets.lib.hooks import HookState, ablation_hooks
from bt_assets.lib.sampling import sample_logits, uniforms


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    seed: int


@dataclass(frozen=True)
class Request:
    """One completion to sample: ``condition`` indexes the scale table's first axis."""

    problem_key: int
    sample_id: int
    condition: int
    prompt_ids: tuple[int, ...]
    tag: object = None


@dataclass
class Completion:
    """Generated ids up to, not including, the stop token; ``n_tokens`` counts the EOS too."""

    request: Request
    token_ids: list[int]
    finish_reason: Literal["stop", "length"]

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids) + (self.finish_reason == "stop")


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _left_pad(prompts: Sequence[tuple[int, ...]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids, mask


@torch.inference_mode()
def decode_batch(model: torch.nn.Module, batch: Sequence[Request], state: HookState, sampling: SamplingConfig,
                 eos_ids: Sequence[int], pad_id: int) -> list[Completion]:
    """Sample every row of one batch to EOS or ``max_new_tokens``."""
    dev = _device(model)
    ids, mask = _left_pad([r.prompt_ids for r in batch], pad_id)
    ids, mask = ids.to(dev), mask.to(dev)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    keys = [r.problem_key for r in batch]
    samples = [r.sample_id for r in batch]
    eos = torch.tensor(sorted(set(eos_ids)) or [-1], device=dev)
    state.row_condition = torch.tensor([r.condition for r in batch], device=dev)
    state.present = tuple(sorted({r.condition for r in batch}))
    state.positions = None

    state.phase = "prefill"
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    cache, logits = out.past_key_values, out.logits[:, -1]
    tokens = torch.empty(len(batch), sampling.max_new_tokens, dtype=torch.long, device=dev)
    done = torch.zeros(len(batch), dtype=torch.bool, device=dev)
    stopped = torch.zeros(len(batch), dtype=torch.bool, device=dev)
    lengths = torch.full((len(batch),), sampling.max_new_tokens, dtype=torch.long, device=dev)
    last_pos = pos[:, -1]
    state.phase = "decode"
    for t in range(sampling.max_new_tokens):
        u = uniforms(sampling.seed, keys, samples, t)
        nxt = sample_logits(logits, u, sampling.temperature, sampling.top_p, sampling.top_k)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        tokens[:, t] = nxt
        hit = torch.isin(nxt, eos) & ~done
        lengths = torch.where(hit, torch.full_like(lengths, t), lengths)
        stopped |= hit
        done |= hit
        if bool(done.all()) or t == sampling.max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        last_pos = last_pos + 1
        out = model(input_ids=nxt.unsqueeze(1), attention_mask=mask, position_ids=last_pos.unsqueeze(1),
                    past_key_values=cache, use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1]
    tokens, lengths, stopped = tokens.cpu(), lengths.cpu(), stopped.cpu()
    return [Completion(r, tokens[i, : int(lengths[i])].tolist(), "stop" if bool(stopped[i]) else "length")
            for i, r in enumerate(batch)]


def generate(model: torch.nn.Module, requests: Sequence[Request], scales: torch.Tensor, sampling: SamplingConfig,
             *, eos_ids: Sequence[int], pad_id: int, batch_size: int = 64, hook_state_out: HookState | None = None,
             progress: Callable[[dict], None] | None = None) -> Iterator[list[Completion]]:
    """Yield completed batches. Requests with the same prompt are batched together (less padding);
    hooks for every scaled (component, layer) stay installed for the whole call, and their call counts
    accumulate in ``hook_state_out`` (by phase, component, layer and condition)."""
    state = hook_state_out if hook_state_out is not None else HookState.empty()
    state.scales, state.decode_only = scales.float().cpu(), True
    order = sorted(range(len(requests)), key=lambda i: (len(requests[i].prompt_ids), requests[i].prompt_ids, i))
    t0, tokens, done = time.perf_counter(), 0, 0
    with ablation_hooks(model, state):
        for start in range(0, len(order), batch_size):
            batch = [requests[i] for i in order[start:start + batch_size]]
            comps = decode_batch(model, batch, state, sampling, eos_ids, pad_id)
            done += len(comps)
            tokens += sum(c.n_tokens for c in comps)
            if progress is not None:
                elapsed = time.perf_counter() - t0
                rate = done / elapsed if elapsed else 0.0
                progress({"rows_done": done, "rows_total": len(requests), "tokens": tokens,
                          "tok_per_s": tokens / elapsed if elapsed else 0.0,
                          "eta_s": (len(requests) - done) / rate if rate else float("nan")})
            yield comps
