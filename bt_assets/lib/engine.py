"""The decoding engine: an own sampling loop over a hooked causal LM (not HF ``generate``).

A batch is rows of (problem, sample, condition). The batch's DISTINCT prompts are left-padded with
explicit position ids and prefilled once, with the hooks in phase "prefill" (decode-only ablations leave
the prompt intact, so every sample and condition of a problem shares that prefill and its first-token
logits, offset per row only by a token ban); then one token per step in phase "decode" through a
preallocated KV cache written in place (``bt_assets.lib.kv_cache``). With a bf16/fp16 model on CPU the
rows attend to their prompt's K/V without copies (shared-prefix attention); otherwise each row gets a copy
and sdpa runs as usual. Row r's step-t token uses the counter-based uniform of (seed, problem, sample, t),
so the conditions of one (problem, sample) are paired. Each row stops at its own EOS and leaves the batch.
The loop's state is one ``DecodeState`` (``bt_assets.lib.decode_state``); its device-dependent choices are
one ``EngineOptions`` (``bt_assets.lib.engine_options``; ``EngineOptions.for_device``: the CPU defaults
are the bit-exact path below, the CUDA defaults are not, and use continuous batching:
``bt_assets.lib.scheduler``, where a finished row's slot is refilled; same completions).

Bit-exactness rules (fp32 on CPU, the CPU ``EngineOptions``; bench/RESULTS.md has the measurements).
A completion is then bit-identical whatever its batch size, order or neighbours, and a condition that
scales nothing equals the baseline. Each rule, and the tests that guard it (in
bt_assets_tests/test_engine.py unless marked [devices]: test_engine_devices.py, [sampling]:
test_sampling.py):

1. Row-exact attention: sdpa runs its math kernel on CPU (``EngineOptions.row_exact_attention``); the
   CPU flash kernel gives identical rows different outputs depending on their place in the batch.
   ``test_identical_rows_attend_identically_wherever_they_sit``,
   ``test_cpu_options_are_the_bit_exact_path`` [devices].
2. No matrix product below the row floor (``EngineOptions.min_decode_rows``, 16 on CPU): CPU BLAS
   multiplies fewer than 12 rows (except 4 and 8) through other kernels that round differently. A short
   batch is padded with copies of a real row, finished rows stay as padding, the prefill keeps enough
   positions per prompt that the unembedding sees >= 16 rows, prompts are padded to >= 16 tokens.
   ``test_small_gemms_are_why_batches_are_padded``, ``test_decode_batches_never_run_below_the_row_floor``.
3. One prompt width per run: every prompt is left-padded to ``prompt_width`` (the longest prompt of the
   run) in every batch, so attention sums run over the same columns whatever the batch holds.
   ``test_common_prompt_width_makes_outputs_bit_identical_across_batches``.
4. Batches never split a prompt's rows (``batches``): all samples and conditions of a problem decode
   in one batch with the same padding. ``test_batches_keep_a_prompts_rows_together``,
   ``test_batch_size_and_order_invariance``.
5. Scale 1.0 is an exact no-op: an all-ones table hooks nothing, a hooked row is multiplied by exactly
   1.0, and conditions of a (problem, sample) share their uniforms (``test_uniforms_are_per_row``
   [sampling]). ``test_scale_one_reproduces_baseline``, ``test_per_row_conditions``;
   dropping finished rows late changes nothing: ``test_eos_check_interval_changes_nothing``.
6. bf16 and GPU are NOT batch-invariant: bf16 kernels (and the shared-prefix attention, whose float32
   sums run in another order) and GPU kernels round differently with the batch's shape, and sampling
   amplifies that (RESULTS.md: bf16 agrees on 21/48 completions between batch 48 and 7). So fp32 on CPU
   keeps sdpa (``test_shared_prefix_attention_is_the_bf16_cpu_default``) and is pinned token for token
   (``test_golden_fp32_token_ids``); bf16 is checked to a tolerance only
   (``test_shared_prefix_attention_matches_sdpa``), and on a GPU only rows of ONE batch are compared
   (``test_cuda_scale_one_equals_baseline_in_one_batch`` [devices], marked gpu).

Speed (bench/generation.py, bench/RESULTS.md): with all rows of a chunk in one batch the decode step is
bound by the linear layers' matrix products; the rest is attention, sampling (a top-k prefilter and
integer-keyed tie-breaking, no sort of the vocabulary) and Python/HF overhead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from bt_assets.lib.decode_state import DecodeState
from bt_assets.lib.engine_options import MIN_DECODE_ROWS, EngineOptions, attention_kernel
from bt_assets.lib.hooks import HookState, ablation_hooks, decoder_layers
from bt_assets.lib.intervention_hooks import first_token_logits
from bt_assets.lib.progress import progress_event

if TYPE_CHECKING:
    from transformers.cache_utils import Cache

__all__ = [
    "MIN_DECODE_ROWS",
    "Completion",
    "DecodeState",
    "EngineOptions",
    "Request",
    "SamplingConfig",
    "batch_order",
    "batches",
    "decode_batch",
    "generate",
    "row_exact_attention",
    "shared_attention_supported",
    "slab_cache",
]


@dataclass(frozen=True)
class SamplingConfig:
    """How every row of a run samples its tokens (validated on construction)."""

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


def _left_pad(
    prompts: Sequence[tuple[int, ...]], pad_id: int, min_width: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and attention mask, prompts right-aligned, T = max(longest prompt, ``min_width``)."""
    width = max(min_width, *(len(p) for p in prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError("empty prompt")
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return ids, mask


def slab_cache(n_layers: int, capacity: int) -> Cache:
    """A KV cache of ``n_layers`` in-place slab layers holding up to ``capacity`` positions per row."""
    from bt_assets.lib import kv_cache

    return kv_cache.slab_cache(n_layers, capacity)


def _device(model: nn.Module) -> torch.device:
    """The device of the model's parameters."""
    return next(model.parameters()).device


def row_exact_attention(model: nn.Module) -> AbstractContextManager:
    """The attention kernel of the model's device defaults: sdpa's math kernel on CPU, where the flash
    kernel gives rows with identical inputs different outputs depending on their position in the batch
    (measured on torch 2.13: up to 1e-7 in an attention output and 2.5e-5 in a decode step's logits;
    enough to flip a near-tie between the baseline and a scale-1.0 row); nothing on an accelerator."""
    return attention_kernel(EngineOptions.for_device(_device(model)))


def shared_attention_supported(model: nn.Module) -> bool:
    """The shared-prefix decode attention fits Llama/Qwen2-style models on sdpa without sliding windows."""
    cfg = getattr(model, "config", None)
    layers = getattr(getattr(model, "model", None), "layers", None)
    if cfg is None or layers is None or getattr(cfg, "_attn_implementation", None) != "sdpa":
        return False
    if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])):
        return False
    return all(getattr(layer.self_attn, "config", None) is cfg for layer in layers)


@contextmanager
def _attention_implementation(model: nn.Module, name: str) -> Iterator[None]:
    """Switch the model's attention implementation to ``name`` for the block."""
    cfg = model.config
    old = cfg._attn_implementation
    cfg._attn_implementation = name
    try:
        yield
    finally:
        cfg._attn_implementation = old


@torch.inference_mode()
def decode_batch(
    model: nn.Module,
    batch: Sequence[Request],
    state: HookState,
    sampling: SamplingConfig,
    eos_ids: Sequence[int],
    pad_id: int,
    *,
    options: EngineOptions | None = None,
    shared_attention: bool | None = None,
    prompt_width: int = 0,
) -> list[Completion]:
    """Sample every row of one batch to its EOS or ``max_new_tokens``; hooks read ``state`` per forward.

    The prompt is prefilled ONCE per distinct prompt of the batch (decode-only hooks leave the prefill
    alone, so every sample and condition of a problem shares it) and its KV cache is copied to the rows.
    Decoding writes K/V in place into a preallocated slab; tokens and each row's first EOS step stay on
    the device until the end. Host syncs per step: the sampler's tie check, and, every
    ``options.eos_check_every`` steps, the check that drops finished rows (a finished row may decode a
    few more tokens that are thrown away: no other row depends on it, so the outputs are the same).
    ``options`` default: ``EngineOptions.for_device`` of the model's device.

    ``shared_attention`` attends to each prompt's K/V once for all its rows instead of copying them to
    every row (see ``kv_cache.SharedPrefixCache``); off, the rows get copies of the prompt's K/V in a
    slab and sdpa. Default: on for a bf16/fp16 model when ``options.shared_attention_low_precision`` (the
    CPU default: decode attention there is bound by re-reading the prompt's K/V per row), off for fp32,
    whose outputs stay those of sdpa token for token (the shared path's float32 sums run in another
    order: the same tokens but for an occasional rounding-level tie). ``generate`` runs it under the
    options' attention kernel.
    """
    from bt_assets.lib import kv_cache

    if not state.decode_only:
        raise ValueError(
            "decode_batch shares the prompt prefill across conditions: hooks must be decode_only"
        )
    dev = _device(model)
    opts = options or EngineOptions.for_device(dev)
    floor, n_real = opts.min_decode_rows, len(batch)
    batch = list(batch) + [batch[-1]] * max(0, floor - n_real)  # padding rows (rule 2)
    distinct: dict[tuple[int, ...], int] = {}
    src = torch.tensor([distinct.setdefault(r.prompt_ids, len(distinct)) for r in batch], device=dev)
    # every prompt is left-padded to the same width in every batch (at least the row floor, so the
    # prefill's matrix products have enough rows): attention sums then run over the same columns
    # whatever the batch holds, and a completion does not depend on its batch's other prompts
    ids, mask = (t.to(dev) for t in _left_pad(list(distinct), pad_id, max(prompt_width, floor)))
    width, steps = ids.shape[1], sampling.max_new_tokens
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # (P, T) positions count real tokens only
    if shared_attention is None:
        low_precision = next(model.parameters()).dtype in (torch.bfloat16, torch.float16)
        shared_attention = (
            opts.shared_attention_low_precision and low_precision and shared_attention_supported(model)
        )
    elif shared_attention and not shared_attention_supported(model):
        raise ValueError("shared_attention needs a Llama/Qwen2-style sdpa model without sliding windows")
    n_layers = len(decoder_layers(model))
    if shared_attention:
        cache = kv_cache.SharedPrefixCache(n_layers, steps - 1, mask)
    else:
        cache = kv_cache.slab_cache(n_layers, width + steps - 1)
    # hooks count the prefill call for every condition of the batch; decode-only, they scale nothing
    state.row_condition = torch.tensor([r.condition for r in batch], device=dev)
    state.positions, state.phase = None, "prefill"
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=pos,
        past_key_values=cache,
        use_cache=True,
        # enough positions per prompt that the unembedding multiplies >= floor rows: the first token's
        # logits then do not depend on how many distinct prompts share the batch
        logits_to_keep=-(-floor // ids.shape[0]),  # <= width: prompts are >= floor wide
    )
    logits = first_token_logits(state, out.logits[:, -1][src])  # (n, V): each row from its prefill
    if shared_attention:
        cache.set_rows(src)
    else:
        cache.batch_select_indices(src)
    decode = DecodeState.start(
        batch,
        cache=cache,
        hooks=state,
        logits=logits,
        eos_ids=eos_ids,
        prompt_mask=mask[src],
        positions=pos[src, -1:],
        steps=steps,
        shared=shared_attention,
    )
    state.phase = "decode"
    switch = (
        _attention_implementation(model, kv_cache.SHARED_ATTENTION) if shared_attention else nullcontext()
    )
    with switch:
        rows, ends = _decode_steps(model, decode, sampling, opts)
    return [
        Completion(r, rows[i][: ends[i]], "stop" if ends[i] < steps else "length")
        for i, r in enumerate(batch[:n_real])
    ]


def _decode_steps(
    model: nn.Module, decode: DecodeState, sampling: SamplingConfig, options: EngineOptions
) -> tuple[list[list[int]], list[int]]:
    """The decode loop of ``decode_batch``: (token ids per row, step of each row's first EOS or steps)."""
    steps = sampling.max_new_tokens
    for t in range(steps):
        decode.sample(sampling, t)
        if t == steps - 1:
            break
        check = decode.eos.numel() and (t + 1) % options.eos_check_every == 0
        if check and not decode.drop_finished(options.min_decode_rows):
            break  # every row has stopped
        decode.forward(model, t)
    return decode.tokens.tolist(), decode.stop_at.tolist()


def batch_order(requests: Sequence[Request]) -> list[int]:
    """Request indices grouped by prompt (same prompt adjacent, similar lengths together: less padding)."""
    return sorted(range(len(requests)), key=lambda i: (len(requests[i].prompt_ids), requests[i].prompt_ids))


def batches(requests: Sequence[Request], order: Sequence[int], batch_size: int) -> list[list[int]]:
    """``order`` cut into batches of at most ``batch_size`` rows that never split one prompt's rows
    (unless a prompt alone has more): every sample and condition of a problem then decodes in the same
    batch, with the same prompt padding, so conditions that scale nothing equal the baseline exactly."""
    out: list[list[int]] = []
    group: list[int] = []
    for pos, i in enumerate(order):
        group.append(i)
        last = pos + 1 == len(order) or requests[order[pos + 1]].prompt_ids != requests[i].prompt_ids
        if not last:
            continue
        while len(group) > batch_size:  # one prompt with more rows than a batch: full batches of it
            out.append(group[:batch_size])
            group = group[batch_size:]
        if out and len(out[-1]) + len(group) <= batch_size:
            out[-1].extend(group)
        else:
            out.append(group)
        group = []
    return out


def generate(
    model: nn.Module,
    requests: Sequence[Request],
    scales: torch.Tensor,
    sampling: SamplingConfig,
    eos_ids: Sequence[int],
    pad_id: int,
    batch_size: int | None = 64,
    hook_state_out: HookState | None = None,
    progress: Callable[[dict], None] | None = None,
    eos_check_every: int | None = None,
    shared_attention: bool | None = None,
    prompt_width: int = 0,
    options: EngineOptions | None = None,
) -> Iterator[list[Completion]]:
    """Yield the completions of each finished batch (in ``batch_order``, not request order); with
    ``options.scheduler == "continuous"``, of the rows finished at each check (``scheduler``; admitted in
    request order, at most ``batch_size`` rows live).

    Ablation hooks on every (layer, component) scaled by some condition of ``scales`` (C, L, 2), decode
    only. One HookState serves the whole call; its call counts keep accumulating in ``hook_state_out``
    (by phase, component, layer, and by condition). Hooks are installed per batch and removed before each
    yield, so the model is never left hooked while the caller holds the generator.

    ``prompt_width``: left-pad every prompt to at least this many tokens. Pass the longest prompt of the
    whole run (e.g. the prompts table's maximum): every batch then has the same width, and in fp32 on
    CPU a completion is bit-identical whatever its batch size, order or neighbours.

    ``options``: the device-dependent choices; None = ``EngineOptions.for_device`` of the model's device.
    ``eos_check_every``, when given, overrides ``options.eos_check_every``. ``batch_size`` None: planned
    from free device memory (``batch_plan.plan_for``).
    """
    opts = options or EngineOptions.for_device(_device(model))
    if eos_check_every:
        opts = replace(opts, eos_check_every=eos_check_every)
    state = hook_state_out if hook_state_out is not None else HookState.empty()
    state.scales, state.decode_only = scales.detach().float(), True
    if batch_size is None:  # planned from free memory, KV bytes per token and the budget
        from bt_assets.lib.batch_plan import plan_for

        width = max([prompt_width, *(len(r.prompt_ids) for r in requests)])
        batch_size = plan_for(model, prompt_width=width, max_new_tokens=sampling.max_new_tokens).rows
    if opts.scheduler == "continuous":
        from bt_assets.lib.scheduler import generate_continuous

        kw = {"options": opts, "rows": batch_size, "prompt_width": prompt_width, "progress": progress}
        yield from generate_continuous(model, requests, state, sampling, eos_ids, pad_id, **kw)
        return
    t0, tokens, done = time.perf_counter(), 0, 0
    for rows in batches(requests, batch_order(requests), batch_size):
        batch = [requests[i] for i in rows]
        with ablation_hooks(model, state), attention_kernel(opts):
            comps = decode_batch(
                model,
                batch,
                state,
                sampling,
                eos_ids,
                pad_id,
                options=opts,
                shared_attention=shared_attention,
                prompt_width=prompt_width,
            )
        done, tokens = done + len(comps), tokens + sum(c.n_tokens for c in comps)
        if progress is not None:
            progress(progress_event(done, len(requests), tokens, time.perf_counter() - t0))
        yield comps
