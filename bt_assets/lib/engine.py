"""The decoding engine: an own sampling loop over a hooked causal LM (not HF ``generate``).

A batch is rows of (problem, sample, condition). The batch's DISTINCT prompts are left-padded with
explicit position ids and prefilled once, with the hooks in phase "prefill" (decode-only ablations leave
the prompt intact, so every sample and condition of a problem shares that prefill and its first-token
logits); then one token per step in phase "decode" through a preallocated KV cache written in place.
On CPU with a bf16/fp16 model the rows attend to their prompt's K/V without copies (shared-prefix
attention); otherwise each row gets a copy and sdpa runs as usual. Row r's step-t token uses the
counter-based uniform of (seed, problem, sample, t), so the conditions of one (problem, sample) are
paired and a completion does not depend on batch size, order or neighbours up to floating-point
rounding. Each row stops at its own EOS and leaves the batch (its cache rows are dropped).

Exactness (fp32, CPU): attention runs on sdpa's row-exact math kernel, no matrix product runs on fewer
than ``MIN_DECODE_ROWS`` rows, every prompt is left-padded to one width for the whole run
(``prompt_width``), and all rows of one prompt decode in the same batch (``batches``). A completion is
then bit-identical whatever its batch size, order or neighbours, and a condition that scales nothing
equals the baseline (bench/RESULTS.md has the measurements behind each rule).

Speed (bench/generation.py, bench/RESULTS.md): with all rows of a chunk in one batch the decode step is
bound by the linear layers' matrix products; the rest is attention, sampling (a top-k prefilter and
integer-keyed tie-breaking, no sort of the vocabulary) and Python/HF overhead.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from bt_assets.lib.hooks import HookState, ablation_hooks, decoder_layers
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


@functools.cache
def _slab_layer_class() -> type:
    """Built on first use, so importing the engine does not import transformers (definitions stay light)."""
    from transformers.cache_utils import DynamicLayer

    class SlabLayer(DynamicLayer):
        """A KV-cache layer with its room allocated up front: each step writes in place and attention reads a
        view, instead of ``DynamicLayer``'s ``torch.cat`` that copies the whole cache on every step."""

        is_croppable = False

        def __init__(self, capacity: int) -> None:
            super().__init__()
            self.capacity, self.length = capacity, 0

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self.dtype, self.device = key_states.dtype, key_states.device
            b, h, _, d = key_states.shape
            self.k_buf = key_states.new_empty(b, h, self.capacity, d)
            self.v_buf = value_states.new_empty(
                b, value_states.shape[1], self.capacity, value_states.shape[-1]
            )
            self.is_initialized = True

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n, q = self.length, key_states.shape[-2]
            if n + q > self.capacity:
                raise RuntimeError(f"KV slab full: {n} + {q} > {self.capacity}")
            self.k_buf[:, :, n : n + q] = key_states
            self.v_buf[:, :, n : n + q] = value_states
            self.length = n + q
            self.keys, self.values = self.k_buf[:, :, : n + q], self.v_buf[:, :, : n + q]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

        def get_max_length(self) -> int:
            return self.capacity

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            """Keep (or repeat) batch rows ``indices``: copies only the filled part of the slab."""
            if not self.is_initialized:
                return
            n = self.length
            for name in ("k_buf", "v_buf"):
                old = getattr(self, name)
                new = old.new_empty(len(indices), *old.shape[1:])
                new[:, :, :n] = old[indices, :, :n]
                setattr(self, name, new)
            self.keys, self.values = self.k_buf[:, :, :n], self.v_buf[:, :, :n]

        def batch_repeat_interleave(self, repeats: int) -> None:
            idx = torch.arange(self.k_buf.shape[0], device=self.k_buf.device) if self.is_initialized else None
            if idx is not None:
                self.batch_select_indices(idx.repeat_interleave(repeats))

    return SlabLayer


def slab_cache(n_layers: int, capacity: int):
    """A KV cache of ``n_layers`` slab layers holding up to ``capacity`` positions per row."""
    from transformers.cache_utils import Cache

    layer = _slab_layer_class()
    return Cache(layers=[layer(capacity) for _ in range(n_layers)])


# Fewest rows a decode batch runs with. CPU BLAS (MKL/oneDNN) multiplies a matrix with fewer than 12
# rows (except 4 and 8) through other kernels than a larger one, which round differently (measured on
# torch 2.13 CPU: rows of 1-3, 5-7, 9-11 differ from the same rows in a batch of 256; from 12 rows on
# they are bit-identical). A short last batch, or a batch whose rows mostly finished, is padded up to
# this many rows (copies of a real row, outputs thrown away), so a completion does not depend on how
# many neighbours it has: the scale-1.0 sweep cell equals the baseline token for token.
MIN_DECODE_ROWS = 16
SHARED_ATTENTION = "bt_shared_prefix"  # the attention implementation name the decode steps switch to


@functools.cache
def _shared_prefix_cache_class() -> type:
    """The shared-prefix cache and its attention function (registered with transformers on first use).

    Decode attention of a row = attention over its prompt's K/V (the same for every sample and condition
    of that prompt) + attention over its own generated K/V, merged by their log-sum-exps. The prompt part
    runs once per prompt for all its rows' queries (G rows x g query heads per KV head: a real matrix
    product instead of G matrix-vector products re-reading the same K/V), so the prompt's K/V are read
    once per prompt rather than once per row, and never copied to the rows. K/V are kept and the scores,
    softmax and weighted sum computed in float32 (as the fused kernels do internally), whatever the
    model's dtype."""
    from transformers import AttentionInterface
    from transformers.cache_utils import Cache, DynamicLayer
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        cache = kwargs.pop("bt_shared_prefix", None)
        if cache is None or query.shape[2] != 1:  # anything but a cached one-token step: plain sdpa
            return sdpa_attention_forward(
                module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
            )
        return cache.attend(module.layer_idx, query, key, value, scaling), None

    AttentionInterface.register(SHARED_ATTENTION, attention)

    class PrefixLayer(DynamicLayer):
        """One layer: the distinct prompts' K/V (P, Hkv, W, D) from the prefill, and a float32 slab of the
        rows' generated K/V (B, Hkv, capacity, D) written in place."""

        is_croppable = False

        def __init__(self, capacity: int) -> None:
            super().__init__()
            self.capacity, self.length, self.prefix_len = capacity, 0, 0
            self.prefix_k = self.prefix_v = self.k_buf = self.v_buf = None

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self.dtype, self.device = key_states.dtype, key_states.device
            self.is_initialized = True

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            if self.prefix_k is None:  # the prefill of the distinct prompts: sdpa attends to these
                self.prefix_k, self.prefix_v = key_states.float(), value_states.float()
                self.prefix_len = key_states.shape[-2]
                return key_states, value_states
            n, q = self.length, key_states.shape[-2]
            if self.k_buf is None:
                b, h, _, d = key_states.shape
                self.k_buf = torch.empty(b, h, self.capacity, d, device=self.device)
                self.v_buf = torch.empty(b, h, self.capacity, value_states.shape[-1], device=self.device)
            if n + q > self.capacity:
                raise RuntimeError(f"KV slab full: {n} + {q} > {self.capacity}")
            self.k_buf[:, :, n : n + q] = key_states
            self.v_buf[:, :, n : n + q] = value_states
            self.length = n + q
            self.keys, self.values = self.k_buf[:, :, : n + q], self.v_buf[:, :, : n + q]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.prefix_len + self.length

        def get_max_length(self) -> int:
            return -1

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            """Keep rows ``indices`` of the generated part (the prompts' part is per prompt)."""
            if self.k_buf is None:
                return
            n = self.length
            for name in ("k_buf", "v_buf"):
                old = getattr(self, name)
                new = old.new_empty(len(indices), *old.shape[1:])
                new[:, :, :n] = old[indices, :, :n]
                setattr(self, name, new)
            self.keys, self.values = self.k_buf[:, :, :n], self.v_buf[:, :, :n]

    class SharedPrefixCache(Cache):
        def __init__(self, n_layers: int, capacity: int, prompt_mask: torch.Tensor) -> None:
            super().__init__(layers=[PrefixLayer(capacity) for _ in range(n_layers)])
            keep = prompt_mask.bool()[:, None, None, :]  # (P, 1, 1, W): the prompts' left padding
            self.bias = torch.zeros(keep.shape, device=keep.device).masked_fill(~keep, float("-inf"))
            self.n_prompts = prompt_mask.shape[0]

        def set_rows(self, src: torch.Tensor) -> None:
            """Row r decodes prompt ``src[r]``: lay the rows out as (prompt, slot) with G slots each."""
            counts = torch.bincount(src, minlength=self.n_prompts)
            g = max(int(counts.max()), 1)
            order = torch.argsort(src, stable=True)
            slot = torch.arange(len(src), device=src.device) - (counts.cumsum(0) - counts)[src[order]]
            flat = src[order] * g + slot
            self.src, self.slots = src, g
            self.row_flat = torch.empty_like(src)
            self.row_flat[order] = flat  # row -> its (prompt, slot) position
            self.gather = torch.zeros(self.n_prompts * g, dtype=torch.long, device=src.device)
            self.gather[flat] = order  # (prompt, slot) -> row; empty slots compute row 0, never read

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self.set_rows(self.src[indices])
            super().batch_select_indices(indices)

        def attend(self, layer_idx, query, key, value, scaling) -> torch.Tensor:
            """(B, 1, H, D) attention output of one decode step (query (B, H, 1, D); key/value: the rows'
            generated K/V (B, Hkv, n, D) float32, the current token included)."""
            layer = self.layers[layer_idx]
            kp, vp = layer.prefix_k, layer.prefix_v
            b, h, _, d = query.shape
            n_p, hkv, g_rows = kp.shape[0], kp.shape[1], self.slots
            g = h // hkv
            scale = scaling if scaling is not None else d**-0.5
            q = query.reshape(b, hkv, g, d).float()
            qp = q[self.gather].view(n_p, g_rows, hkv, g, d).transpose(1, 2).reshape(n_p, hkv, g_rows * g, d)
            s1 = torch.matmul(qp, kp.transpose(-1, -2)).mul_(scale).add_(self.bias)
            m1 = s1.amax(-1, keepdim=True)
            e1 = s1.sub_(m1).exp_()
            l1, o1 = e1.sum(-1, keepdim=True), torch.matmul(e1, vp)

            def rows(x: torch.Tensor) -> torch.Tensor:  # (P, Hkv, G*g, k) -> (B, Hkv, g, k)
                k = x.shape[-1]
                x = x.view(n_p, hkv, g_rows, g, k).transpose(1, 2).reshape(n_p * g_rows, hkv, g, k)
                return x[self.row_flat]

            o1, m1, l1 = rows(o1), rows(m1), rows(l1)
            s2 = torch.matmul(q, key.transpose(-1, -2)).mul_(scale)
            m2 = s2.amax(-1, keepdim=True)
            e2 = s2.sub_(m2).exp_()
            l2, o2 = e2.sum(-1, keepdim=True), torch.matmul(e2, value)
            m = torch.maximum(m1, m2)
            a1, a2 = (m1 - m).exp_(), (m2 - m).exp_()
            out = (o1 * a1 + o2 * a2) / (l1 * a1 + l2 * a2)
            return out.reshape(b, 1, h, d).to(query.dtype)

    return SharedPrefixCache


def row_exact_attention(model: nn.Module) -> AbstractContextManager:
    """sdpa's math kernel on CPU, where the flash kernel gives rows with identical inputs different
    outputs depending on their position in the batch (measured on torch 2.13: up to 1e-7 in an
    attention output and 2.5e-5 in a decode step's logits; enough to flip a near-tie between the
    baseline and a scale-1.0 row). The math kernel computes every row on its own: bit-identical rows."""
    if next(model.parameters()).device.type != "cpu":
        return nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


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
    eos_check_every: int | None = None,
    shared_attention: bool | None = None,
    prompt_width: int = 0,
) -> list[Completion]:
    """Sample every row of one batch to its EOS or ``max_new_tokens``; hooks read ``state`` per forward.

    The prompt is prefilled ONCE per distinct prompt of the batch (decode-only hooks leave the prefill
    alone, so every sample and condition of a problem shares it) and its KV cache is copied to the rows.
    Decoding writes K/V in place into a preallocated slab; tokens and each row's first EOS step stay on
    the device until the end. Host syncs per step: the sampler's tie check, and, every
    ``eos_check_every`` steps (default 1 on CPU where a sync is free, 8 on an accelerator), the check
    that drops finished rows (a finished row may decode a few more tokens that are thrown away: no other
    row depends on it, so the outputs are the same).

    ``shared_attention`` attends to each prompt's K/V once for all its rows instead of copying them to
    every row (see ``_shared_prefix_cache_class``); off, the rows get copies of the prompt's K/V in a slab
    and sdpa. Default: on for a bf16/fp16 model on CPU (decode attention there is bound by re-reading the
    prompt's K/V per row), off for fp32, whose outputs stay those of sdpa token for token (the shared
    path's float32 sums run in another order: the same tokens but for an occasional rounding-level tie).
    ``generate`` runs it under ``row_exact_attention``.
    """
    if not state.decode_only:
        raise ValueError(
            "decode_batch shares the prompt prefill across conditions: hooks must be decode_only"
        )
    dev = next(model.parameters()).device
    n_real = len(batch)
    batch = list(batch) + [batch[-1]] * max(0, MIN_DECODE_ROWS - n_real)  # padding rows (see the constant)
    distinct: dict[tuple[int, ...], int] = {}
    src = torch.tensor([distinct.setdefault(r.prompt_ids, len(distinct)) for r in batch], device=dev)
    # every prompt is left-padded to the same width in every batch (at least MIN_DECODE_ROWS, so the
    # prefill's matrix products have enough rows): attention sums then run over the same columns
    # whatever the batch holds, and a completion does not depend on its batch's other prompts
    min_width = max(prompt_width, MIN_DECODE_ROWS)
    ids, mask = (t.to(dev) for t in _left_pad(list(distinct), pad_id, min_width))
    width, steps, n = ids.shape[1], sampling.max_new_tokens, len(batch)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # (P, T) positions count real tokens only
    if shared_attention is None:
        low_precision = next(model.parameters()).dtype in (torch.bfloat16, torch.float16)
        shared_attention = dev.type == "cpu" and low_precision and shared_attention_supported(model)
    elif shared_attention and not shared_attention_supported(model):
        raise ValueError("shared_attention needs a Llama/Qwen2-style sdpa model without sliding windows")
    n_layers = len(decoder_layers(model))
    if shared_attention:
        cache = _shared_prefix_cache_class()(n_layers, steps - 1, mask)
    else:
        cache = slab_cache(n_layers, width + steps - 1)
    # hooks count the prefill call for every condition of the batch; decode-only, they scale nothing
    state.row_condition = torch.tensor([r.condition for r in batch], device=dev)
    state.positions, state.phase = None, "prefill"
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=pos,
        past_key_values=cache,
        use_cache=True,
        # enough positions per prompt that the unembedding multiplies >= MIN_DECODE_ROWS rows: the
        # first token's logits then do not depend on how many distinct prompts share the batch
        logits_to_keep=-(-MIN_DECODE_ROWS // ids.shape[0]),  # <= width: prompts are >= MIN_DECODE_ROWS wide
    )
    logits = out.logits[:, -1][src]  # (n, V): each row starts from its prompt's prefill
    if shared_attention:
        cache.set_rows(src)
    else:
        cache.batch_select_indices(src)
    # (n, 1, 1, T + steps) attention mask handed to the model as is: the prompt's padding, then all ones
    attend = torch.ones(n, 1, 1, width + steps, dtype=torch.bool, device=dev)
    attend[:, 0, 0, :width] = mask[src].bool()
    pos = pos[src, -1:]
    keys = as_int64([r.problem_key for r in batch]).to(dev)
    samples = torch.tensor([r.sample_id for r in batch], device=dev)
    eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long, device=dev)
    every = eos_check_every or (1 if dev.type == "cpu" else 8)
    state.phase = "decode"
    shared_kw = {"bt_shared_prefix": cache} if shared_attention else {}
    switch = _attention_implementation(model, SHARED_ATTENTION) if shared_attention else nullcontext()
    with switch:
        rows, ends = _decode_steps(
            model, cache, state, sampling, logits, keys, samples, eos, attend, pos, width, every, shared_kw
        )
    return [
        Completion(r, rows[i][: ends[i]], "stop" if ends[i] < steps else "length")
        for i, r in enumerate(batch[:n_real])
    ]


def _decode_steps(
    model, cache, state, sampling, logits, keys, samples, eos, attend, pos, width, every, shared_kw
):
    """The decode loop of ``decode_batch``: (token ids per row, step of each row's first EOS or steps)."""
    n, steps, dev = len(keys), sampling.max_new_tokens, logits.device
    alive = torch.arange(n, device=dev)  # batch row of each live row
    tokens = torch.full((n, steps), -1, dtype=torch.long, device=dev)
    stop_at = torch.full((n,), steps, dtype=torch.long, device=dev)  # step of the row's EOS; steps = none
    for t in range(steps):
        u = uniforms(sampling.seed, keys[alive], samples[alive], t)  # (b,) shared by all conditions
        nxt = sample_logits(logits, u, sampling.temperature, sampling.top_p, sampling.top_k)  # (b,)
        tokens[alive, t] = nxt
        if eos.numel():  # the first EOS of each row
            first = stop_at[alive]
            stop_at[alive] = torch.where((first == steps) & torch.isin(nxt, eos), t, first)
        if t == steps - 1:
            break
        if eos.numel() and (t + 1) % every == 0:
            live = stop_at[alive] == steps
            if not bool(live.any()):
                break
            keep = live.nonzero().squeeze(1)
            if keep.numel() < MIN_DECODE_ROWS:  # finished rows stay as padding (the batch has >= that many)
                pad = (~live).nonzero().squeeze(1)[: MIN_DECODE_ROWS - keep.numel()]
                keep = torch.cat([keep, pad]).sort().values
            if keep.numel() < alive.numel():  # drop finished rows from every per-row tensor and the cache
                alive, nxt, attend, pos = alive[keep], nxt[keep], attend[keep], pos[keep]
                cache.batch_select_indices(keep)
                state.row_condition = state.row_condition[keep]
        pos = pos + 1
        out = model(
            input_ids=nxt.unsqueeze(1),
            attention_mask=None if shared_kw else attend[..., : width + t + 1],
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
            **shared_kw,
        )
        logits = out.logits[:, -1]
    return tokens.tolist(), stop_at.tolist()


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
    batch_size: int = 64,
    hook_state_out: HookState | None = None,
    progress: Callable[[dict], None] | None = None,
    eos_check_every: int | None = None,
    shared_attention: bool | None = None,
    prompt_width: int = 0,
) -> Iterator[list[Completion]]:
    """Yield the completions of each finished batch (in ``batch_order``, not request order).

    Ablation hooks on every (layer, component) scaled by some condition of ``scales`` (C, L, 2), decode
    only. One HookState serves the whole call; its call counts keep accumulating in ``hook_state_out``
    (by phase, component, layer, and by condition). Hooks are installed per batch and removed before each
    yield, so the model is never left hooked while the caller holds the generator.

    ``prompt_width``: left-pad every prompt to at least this many tokens. Pass the longest prompt of the
    whole run (e.g. the prompts table's maximum): every batch then has the same width, and in fp32 on
    CPU a completion is bit-identical whatever its batch size, order or neighbours.
    """
    state = hook_state_out if hook_state_out is not None else HookState.empty()
    state.scales, state.decode_only = scales.detach().float(), True
    t0, tokens, done = time.perf_counter(), 0, 0
    for rows in batches(requests, batch_order(requests), batch_size):
        batch = [requests[i] for i in rows]
        with ablation_hooks(model, state), row_exact_attention(model):
            comps = decode_batch(
                model,
                batch,
                state,
                sampling,
                eos_ids,
                pad_id,
                eos_check_every,
                shared_attention,
                prompt_width,
            )
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
