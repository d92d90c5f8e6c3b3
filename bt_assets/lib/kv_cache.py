"""The engine's KV caches: a preallocated slab written in place, and the shared-prefix decode cache.

``SlabLayer`` replaces ``DynamicLayer``'s ``torch.cat`` per step (a copy of the whole cache) with writes
into room allocated up front. ``SharedPrefixCache`` keeps each distinct prompt's K/V once and the rows'
generated K/V in a float32 slab; its ``attend`` runs one decode step's attention for all rows (see the
class). Both layer kinds share one in-place append (``_InPlaceLayer``). ``RowSlab`` is the continuous
scheduler's (``bt_assets.lib.scheduler``): one preallocated slab for every live row, attended per
segment of rows by ``cohort_attention``.

Importing this module imports transformers and registers the attention function ``SHARED_ATTENTION``
with it; ``bt_assets.lib.engine`` imports it only when it decodes, so loading the Dagster definitions
(which import the engine's dataclasses) stays light.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.cache_utils import Cache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from bt_assets.lib.batch_plan import KVShape

SHARED_ATTENTION = "bt_shared_prefix"  # the attention implementation name the decode steps switch to
COHORT_ATTENTION = "bt_cohorts"  # the continuous scheduler's decode attention (``RowSlab``)


class _InPlaceLayer(DynamicLayer):
    """A cache layer whose generated K/V live in (rows, heads, capacity, dim) buffers written in place;
    ``keys`` / ``values`` are views of the filled part. Subclasses decide when the buffers are allocated
    and in which dtype."""

    is_croppable = False

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity, self.length = capacity, 0
        self.k_buf: torch.Tensor | None = None
        self.v_buf: torch.Tensor | None = None

    def _allocate(self, key_states: torch.Tensor, value_states: torch.Tensor, dtype: torch.dtype) -> None:
        """Buffers for ``capacity`` positions, shaped like ``key_states`` / ``value_states`` otherwise."""
        b, hk, _, dk = key_states.shape
        hv, dv, dev = value_states.shape[1], value_states.shape[-1], key_states.device
        self.k_buf = torch.empty(b, hk, self.capacity, dk, dtype=dtype, device=dev)
        self.v_buf = torch.empty(b, hv, self.capacity, dv, dtype=dtype, device=dev)

    def _append(
        self, key_states: torch.Tensor, value_states: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new positions after the filled ones; return views of everything filled so far."""
        n, q = self.length, key_states.shape[-2]
        if n + q > self.capacity:
            raise RuntimeError(f"KV slab full: {n} + {q} > {self.capacity}")
        self.k_buf[:, :, n : n + q] = key_states
        self.v_buf[:, :, n : n + q] = value_states
        self.length = n + q
        self.keys, self.values = self.k_buf[:, :, : n + q], self.v_buf[:, :, : n + q]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep (or repeat) batch rows ``indices``: copies only the filled part of the buffers."""
        if self.k_buf is None:
            return
        n = self.length
        for name in ("k_buf", "v_buf"):
            old = getattr(self, name)
            new = old.new_empty(len(indices), *old.shape[1:])
            new[:, :, :n] = old[indices, :, :n]
            setattr(self, name, new)
        self.keys, self.values = self.k_buf[:, :, :n], self.v_buf[:, :, :n]


class SlabLayer(_InPlaceLayer):
    """A KV-cache layer with its room allocated up front (model dtype): each step writes in place and
    attention reads a view, instead of ``DynamicLayer``'s ``torch.cat`` that copies the whole cache."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Allocate the slab on the first update, in the dtype and on the device of the model's K/V."""
        self.dtype, self.device = key_states.dtype, key_states.device
        self._allocate(key_states, value_states, key_states.dtype)
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        """Append the step's K/V in place; return the filled K/V."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        return self._append(key_states, value_states)

    def get_seq_length(self) -> int:
        """Positions filled so far."""
        return self.length

    def get_max_length(self) -> int:
        """Positions the slab holds."""
        return self.capacity

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat every row ``repeats`` times in place (rows stay adjacent)."""
        if self.k_buf is not None:
            idx = torch.arange(self.k_buf.shape[0], device=self.k_buf.device)
            self.batch_select_indices(idx.repeat_interleave(repeats))


def slab_cache(n_layers: int, capacity: int) -> Cache:
    """A KV cache of ``n_layers`` slab layers holding up to ``capacity`` positions per row."""
    return Cache(layers=[SlabLayer(capacity) for _ in range(n_layers)])


class PrefixLayer(_InPlaceLayer):
    """One layer of ``SharedPrefixCache``: the distinct prompts' K/V (P, Hkv, W, D) from the prefill, and
    a float32 slab of the rows' generated K/V (B, Hkv, capacity, D) written in place."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.prefix_len = 0
        self.prefix_k: torch.Tensor | None = None
        self.prefix_v: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Record dtype and device; the buffers wait for the first decode step (its row count)."""
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        """First call (the prefill of the distinct prompts): keep them as the prefix and return them for
        sdpa. Later calls (decode steps): append the rows' K/V in float32; return the rows' K/V."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.prefix_k is None:
            self.prefix_k, self.prefix_v = key_states.float(), value_states.float()
            self.prefix_len = key_states.shape[-2]
            return key_states, value_states
        if self.k_buf is None:
            self._allocate(key_states, value_states, torch.float32)
        return self._append(key_states, value_states)

    def get_seq_length(self) -> int:
        """Prompt width plus generated positions (what the model's position bookkeeping expects)."""
        return self.prefix_len + self.length

    def get_max_length(self) -> int:
        """No fixed maximum as far as transformers is concerned."""
        return -1


class SharedPrefixCache(Cache):
    """The shared-prefix cache: decode attention of a row = attention over its prompt's K/V (the same for
    every sample and condition of that prompt) + attention over its own generated K/V, merged by their
    log-sum-exps.

    The prompt part runs once per prompt for all its rows' queries (G rows x g query heads per KV head:
    a real matrix product instead of G matrix-vector products re-reading the same K/V), so the prompt's
    K/V are read once per prompt rather than once per row, and never copied to the rows. K/V are kept and
    the scores, softmax and weighted sum computed in float32 (as the fused kernels do internally), whatever
    the model's dtype. The model must run under attention implementation ``SHARED_ATTENTION`` with this
    cache passed as keyword ``bt_shared_prefix``."""

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
        """Keep rows ``indices`` (their prompts' K/V stay; the (prompt, slot) layout is rebuilt)."""
        self.set_rows(self.src[indices])
        super().batch_select_indices(indices)

    def attend(
        self,
        layer_idx: int,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        scaling: float | None,
    ) -> torch.Tensor:
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


def shared_prefix_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention implementation ``SHARED_ATTENTION``: a cached one-token step with a ``bt_shared_prefix``
    cache runs ``SharedPrefixCache.attend``; anything else (the prefill) runs plain sdpa."""
    cache = kwargs.pop("bt_shared_prefix", None)
    if cache is None or query.shape[2] != 1:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    return cache.attend(module.layer_idx, query, key, value, scaling), None


AttentionInterface.register(SHARED_ATTENTION, shared_prefix_attention)


class SlabRows(DynamicLayer):
    """One layer of ``RowSlab``: (rows, KV heads, capacity, head dim) K and V, preallocated."""

    is_croppable = False

    def __init__(self, slab: RowSlab, k: torch.Tensor, v: torch.Tensor) -> None:
        super().__init__()
        self.slab, self.k, self.v = slab, k, v
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        """Write a decode step's K/V (b, Hkv, 1, D) of every forward row at its slot and column."""
        self.k[self.slab.slots, :, self.slab.cols] = key_states[:, :, 0]
        self.v[self.slab.slots, :, self.slab.cols] = value_states[:, :, 0]
        return self.k, self.v

    def get_seq_length(self) -> int:
        return self.slab.longest

    def get_max_length(self) -> int:
        return -1


class RowSlab(Cache):
    """The continuous scheduler's KV cache: every layer's slab, the rows' attention masks (prompt padding
    False), and the current forward's layout (``plan``: query rows -> slab rows and columns)."""

    def __init__(self, shape: KVShape, rows: int, capacity: int, dtype: torch.dtype, device: torch.device):
        """Allocate ``rows`` x ``capacity`` positions of every layer up front (in ``dtype``)."""
        self.attend = torch.ones(rows, 1, 1, capacity, dtype=torch.bool, device=device)
        self.slots = self.cols = torch.zeros(0, dtype=torch.long, device=device)
        self.plan: list[tuple[int, int, int, int, int]] = []  # (q_lo, q_hi, slab_lo, slab_hi, columns)
        self.longest = 0
        dims = (rows, shape.n_kv_heads, capacity, shape.head_dim)
        k = torch.empty((shape.n_layers, *dims), dtype=dtype, device=device)
        v = torch.empty((shape.n_layers, *dims), dtype=dtype, device=device)
        super().__init__(layers=[SlabRows(self, k[i], v[i]) for i in range(shape.n_layers)])


def cohort_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention implementation ``COHORT_ATTENTION``: one sdpa call per segment of a ``bt_cohorts`` slab
    over that segment's filled columns (the static path's call on the same columns); else plain sdpa."""
    slab = kwargs.pop("bt_cohorts", None)
    if slab is None or query.shape[2] != 1:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    layer = slab.layers[module.layer_idx]
    outs = []
    for q_lo, q_hi, lo, hi, n in slab.plan:
        k, v, m = layer.k[lo:hi, :, :n], layer.v[lo:hi, :, :n], slab.attend[lo:hi, :, :, :n]
        if hi - lo != q_hi - q_lo:  # floor padding: repeats of one row
            k, v, m = (x.expand(q_hi - q_lo, *x.shape[1:]) for x in (k, v, m))
        out, _ = sdpa_attention_forward(
            module, query[q_lo:q_hi], k, v, m, dropout=dropout, scaling=scaling, **kwargs
        )
        outs.append(out)
    return torch.cat(outs), None


AttentionInterface.register(COHORT_ATTENTION, cohort_attention)
