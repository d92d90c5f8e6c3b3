"""The decoding engine: an own sampling loop over a hooked causal LM (not HF ``generate``).

A batch is rows of (problem, sample, condition). Prompts are left-padded with explicit position ids and
prefilled with the hooks in phase "prefill" (decode-only ablations leave the prompt intact); then one
token per step in phase "decode" through the KV cache. Row r's step-t token uses the counter-based
uniform of (seed, problem, sample, t), so a completion does not depend on batch size, order or
neighbours, and the conditions of one (problem, sample) are paired. Each row stops at its own EOS and
leaves the batch (its cache rows are dropped), so finished rows cost nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from bt_assets.lib.hooks import HookState, ablation_hooks
from bt_assets.lib.sampling import as_int64, sample_logits, uniforms


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float  # 0 = greedy
    top_p: float  # nucleus mass in (0, 1]
    top_k: int  # prefilter before the nucleus; 0 = whole vocabulary
    max_new_tokens: int  # generated tokens per row, the EOS included
    seed: int  # run seed of the counter-based uniforms

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.max_new_tokens < 1:
            raise ValueError(f"invalid sampling config {self}")


@dataclass(frozen=True)
class Request:
    """One completion to sample; ``condition`` indexes the scale table's first axis."""

    problem_key: int  # e.g. sampling.stable_key(problem id)
    sample_id: int
    condition: int
    prompt_ids: tuple[int, ...]
    tag: object = None  # carried through to the Completion untouched


@dataclass
class Completion:
    """Generated ids up to, NOT including, the stop token; ``n_tokens`` counts the stop token too."""

    request: Request
    token_ids: list[int]
    finish_reason: Literal["stop", "length"]

    @property
    def n_tokens(self) -> int:
        """The true generated length: ``max_new_tokens`` for "length", index of the EOS + 1 for "stop"."""
        return len(self.token_ids) + (self.finish_reason == "stop")


def _left_pad(prompts: Sequence[tuple[int, ...]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and attention mask, prompts right-aligned."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError("empty prompt")
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return ids, mask


@torch.inference_mode()
def decode_batch(
    model: nn.Module,
    batch: Sequence[Request],
    state: HookState,
    sampling: SamplingConfig,
    eos_ids: Sequence[int],
    pad_id: int,
) -> list[Completion]:
    """Sample every row of one batch to its EOS or ``max_new_tokens``; hooks read ``state`` per forward."""
    dev = next(model.parameters()).device
    ids, mask = (t.to(dev) for t in _left_pad([r.prompt_ids for r in batch], pad_id))
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T) positions count real tokens only
    keys = as_int64([r.problem_key for r in batch])
    samples = torch.tensor([r.sample_id for r in batch])
    eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long, device=dev)
    alive = torch.arange(len(batch))  # batch row of each live row (host)
    out_ids: list[list[int]] = [[] for _ in batch]
    stopped = [False] * len(batch)
    state.row_condition = torch.tensor([r.condition for r in batch], device=dev)
    state.positions, state.phase = None, "prefill"
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    cache, logits, pos = out.past_key_values, out.logits[:, -1], pos[:, -1:]
    state.phase = "decode"
    for t in range(sampling.max_new_tokens):
        u = uniforms(sampling.seed, keys[alive], samples[alive], t)  # (b,) shared by all conditions
        nxt = sample_logits(logits, u, sampling.temperature, sampling.top_p, sampling.top_k)  # (b,)
        hit = torch.isin(nxt, eos)
        for r, tok, h in zip(alive.tolist(), nxt.tolist(), hit.tolist(), strict=True):
            stopped[r] = h
            if not h:
                out_ids[r].append(tok)
        live = ~hit.cpu()
        if t == sampling.max_new_tokens - 1 or not bool(live.any()):
            break
        if not bool(live.all()):  # drop finished rows from every per-row tensor and the cache
            keep = live.nonzero().squeeze(1)
            alive, nxt, mask, pos = alive[keep], nxt[keep.to(dev)], mask[keep.to(dev)], pos[keep.to(dev)]
            cache.batch_select_indices(keep.to(dev))
            state.row_condition = state.row_condition[keep.to(dev)]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        pos = pos + 1
        out = model(
            input_ids=nxt.unsqueeze(1),
            attention_mask=mask,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        cache, logits = out.past_key_values, out.logits[:, -1]
    return [Completion(r, out_ids[i], "stop" if stopped[i] else "length") for i, r in enumerate(batch)]


def batch_order(requests: Sequence[Request]) -> list[int]:
    """Request indices grouped by prompt (same prompt adjacent, similar lengths together: less padding)."""
    return sorted(range(len(requests)), key=lambda i: (len(requests[i].prompt_ids), requests[i].prompt_ids))


def generate(
    model: nn.Module,
    requests: Sequence[Request],
    scales: torch.Tensor,
    sampling: SamplingConfig,
    eos_ids: Sequence[int],
    pad_id: int,
    batch_size: int = 64,
    hook_state_out: HookState | None = None,
    progress: Callable[[dict], None] | None = None,
) -> Iterator[list[Completion]]:
    """Yield the completions of each finished batch (in ``batch_order``, not request order).

    Ablation hooks on every (layer, component) scaled by some condition of ``scales`` (C, L, 2), decode
    only. One HookState serves the whole call; its call counts keep accumulating in ``hook_state_out``
    (by phase, component, layer, and by condition). Hooks are installed per batch and removed before each
    yield, so the model is never left hooked while the caller holds the generator.
    """
    state = hook_state_out if hook_state_out is not None else HookState.empty()
    state.scales, state.decode_only = scales.detach().float(), True
    order, t0, tokens, done = batch_order(requests), time.perf_counter(), 0, 0
    for start in range(0, len(order), batch_size):
        batch = [requests[i] for i in order[start : start + batch_size]]
        with ablation_hooks(model, state):
            comps = decode_batch(model, batch, state, sampling, eos_ids, pad_id)
        done, tokens = done + len(comps), tokens + sum(c.n_tokens for c in comps)
        if progress is not None:
            progress(_progress(done, len(requests), tokens, time.perf_counter() - t0))
        yield comps


def _progress(done: int, total: int, tokens: int, elapsed: float) -> dict:
    rate = done / elapsed if elapsed > 0 else 0.0
    return {
        "rows_done": done,
        "rows_total": total,
        "tokens": tokens,
        "tok_per_s": tokens / elapsed if elapsed > 0 else 0.0,
        "eta_s": (total - done) / rate if rate > 0 else float("nan"),
    }
