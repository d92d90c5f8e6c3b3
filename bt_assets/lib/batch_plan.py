"""How many rows decode at once: a batch chosen from free device memory, KV bytes per token and the budget.

The continuous scheduler (``bt_assets.lib.scheduler``) preallocates one KV slab of ``rows`` rows x
(prompt width + ``max_new_tokens``) positions up front, so a long budget never reallocates or fragments
the cache; this module sizes it. Per row it counts the K/V of every position (2 tensors x layers x KV
heads x head_dim x element size per token) plus a workspace for the row's logits and sampling
temporaries (``WORKSPACE_FLOATS_PER_VOCAB`` float32 values per vocabulary entry); a fixed share of the
free memory is left for the prefill's activations and the allocator. Worked example (the R1 shapes,
checked by hand in bt_assets_tests/test_batch_plan.py): 28 layers x 2 KV heads x 128 dims x 2 bytes x 2
= 28,672 bytes per token, 4096 new + 256 prompt positions = 124.8 MB per row.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
from torch import nn

# float32 values per vocabulary entry that one row's step needs besides its KV: the logits and the
# sampler's temporaries (scaled logits, order keys, probabilities, cumulative sums)
WORKSPACE_FLOATS_PER_VOCAB = 8
USABLE_SHARE = 0.9  # of the free memory: the rest is left to the prefill's activations and the allocator
CPU_DEFAULT_ROWS = 64  # CPU runs without a hand-set batch size (CPU memory is not what limits them)


@dataclass(frozen=True)
class KVShape:
    """What one cached position of the model costs: layers, KV heads, head dim, bytes per element."""

    n_layers: int
    n_kv_heads: int
    head_dim: int
    dtype_bytes: int

    @property
    def bytes_per_token(self) -> int:
        """K and V of one position in every layer."""
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * self.dtype_bytes

    @classmethod
    def of(cls, model: nn.Module) -> KVShape:
        """The shape of a Hugging Face causal LM's KV cache (from its config and parameter dtype)."""
        cfg = model.config
        heads = cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        dtype = next(model.parameters()).dtype
        return cls(cfg.num_hidden_layers, kv_heads, head_dim, torch.empty((), dtype=dtype).element_size())


@dataclass(frozen=True)
class BatchPlan:
    """The planned number of live rows and the numbers it came from (for the run log)."""

    rows: int
    bytes_per_row: int  # KV of ``positions`` plus the sampling workspace
    positions: int  # prompt width + max_new_tokens
    free_bytes: int
    kv_bytes_per_token: int

    def describe(self) -> str:
        """One line for the run log."""
        return (
            f"batch plan: {self.rows} rows x {self.positions} positions, "
            f"{self.kv_bytes_per_token:,} KV bytes/token, {self.bytes_per_row / 2**20:.1f} MiB/row, "
            f"{self.free_bytes / 2**30:.1f} GiB free"
        )


def plan_rows(
    shape: KVShape,
    *,
    free_bytes: int,
    prompt_width: int,
    max_new_tokens: int,
    vocab_size: int,
    max_rows: int | None = None,
    usable_share: float = USABLE_SHARE,
) -> BatchPlan:
    """The most rows whose KV slab and step workspace fit ``usable_share`` of ``free_bytes`` (at least 1,
    at most ``max_rows``)."""
    positions = prompt_width + max_new_tokens
    per_row = shape.bytes_per_token * positions + WORKSPACE_FLOATS_PER_VOCAB * 4 * vocab_size
    rows = max(1, int(free_bytes * usable_share) // per_row)
    if max_rows is not None:
        rows = min(rows, max_rows)
    return BatchPlan(rows, per_row, positions, free_bytes, shape.bytes_per_token)


def free_bytes(device: torch.device) -> int:
    """Free memory of ``device``: the CUDA driver's count, or the host's available memory on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 8 * 2**30


def plan_for(
    model: nn.Module, *, prompt_width: int, max_new_tokens: int, max_rows: int | None = None
) -> BatchPlan:
    """``plan_rows`` for a loaded model on its device, logged (``BatchPlan.describe``, logger
    ``bt_assets.lib.batch_plan``: the run log shows where the live-row count came from). On CPU (host
    memory is rarely the limit and more rows only make each step slower) the plan is capped at
    ``CPU_DEFAULT_ROWS``."""
    dev = next(model.parameters()).device
    cap = max_rows if dev.type != "cpu" else min(max_rows or CPU_DEFAULT_ROWS, CPU_DEFAULT_ROWS)
    plan = plan_rows(
        KVShape.of(model),
        free_bytes=free_bytes(dev),
        prompt_width=prompt_width,
        max_new_tokens=max_new_tokens,
        vocab_size=model.config.vocab_size,
        max_rows=cap,
    )
    logging.getLogger(__name__).info(plan.describe())
    return plan
