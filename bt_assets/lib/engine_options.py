"""The decoding engine's device-dependent choices (``EngineOptions``) and the attention kernel they pick.

The CPU defaults are the engine's bit-exact path; ``bt_assets.lib.engine``'s module docstring lists the
rules ("Bit-exactness rules") and the tests that guard them. Re-exported by ``bt_assets.lib.engine``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

# The CPU row floor (rule 2). CPU BLAS (MKL/oneDNN) multiplies a matrix with fewer than 12 rows (except
# 4 and 8) through other kernels than a larger one, which round differently (measured on torch 2.13 CPU:
# rows of 1-3, 5-7, 9-11 differ from the same rows in a batch of 256; from 12 rows on they are
# bit-identical). 16 leaves a margin.
MIN_DECODE_ROWS = 16


@dataclass(frozen=True)
class EngineOptions:
    """The decode loop's device-dependent choices; ``for_device`` gives the defaults for a device.

    The field defaults are the CPU ones: the bit-exact path."""

    # fewest rows any matrix product of a batch runs with: a short batch is padded with copies of a real
    # row (outputs thrown away) and finished rows stay as padding up to this many; 1 = no padding
    min_decode_rows: int = MIN_DECODE_ROWS
    # decode steps between the checks that drop finished rows (each check is a host sync)
    eos_check_every: int = 1
    # run under sdpa's math kernel, which computes every row on its own (the CPU flash kernel does not)
    row_exact_attention: bool = True
    # default a bf16/fp16 model to the shared-prefix decode attention (``engine.decode_batch``)
    shared_attention_low_precision: bool = True
    # "static": fixed batches that decode until their longest row ends (the bit-exact CPU path, whose
    # completions are pinned by the golden test); "continuous": a finished row's slot is refilled from
    # the queue (``bt_assets.lib.scheduler``; the same completions in fp32 on CPU, see its docstring)
    scheduler: Literal["static", "continuous"] = "static"
    # continuous: refill once 1/refill_fraction of the live-row limit is free (fewer, larger prefills
    # and fewer segments, i.e. sdpa calls per layer, against slots idling a few steps)
    refill_fraction: int = 8

    def __post_init__(self) -> None:
        if self.min_decode_rows < 1 or self.eos_check_every < 1 or self.refill_fraction < 1:
            raise ValueError(f"invalid engine options {self}")
        if self.scheduler not in ("static", "continuous"):
            raise ValueError(f"unknown scheduler {self.scheduler!r}")

    @classmethod
    def for_device(cls, device: torch.device | str) -> EngineOptions:
        """The defaults for ``device``.

        CPU: the bit-exact path: a 16-row floor, an EOS check every step (a host sync is free there),
        the math attention kernel, and shared-prefix attention for bf16/fp16 models (decode attention on
        CPU is bound by re-reading each prompt's K/V once per row).

        Any accelerator (CUDA): row floor 1 (GPU kernels are not batch-invariant anyway and padding
        would only waste compute), sdpa's fused kernels, per-row K/V copies, and an EOS check every 8
        steps. A check is a host sync plus, once some row has finished, a copy of every live row's KV
        cache; every 8 steps a finished row decodes at most 7 tokens for nothing (about 1% of a
        512-token budget) while checks and cache copies happen 8x less often. The sampler syncs once
        per step anyway (its tie check), so a longer interval (e.g. 32) would save little more and
        waste up to 31 steps per finished row. The continuous scheduler: with long-tailed lengths
        (R1 at 4096 new tokens) fixed batches idle most slots behind their longest row."""
        if torch.device(device).type == "cpu":
            return cls()
        return cls(
            min_decode_rows=1,
            eos_check_every=8,
            row_exact_attention=False,
            shared_attention_low_precision=False,
            scheduler="continuous",
        )


def attention_kernel(options: EngineOptions) -> AbstractContextManager:
    """sdpa's math kernel when ``options.row_exact_attention``, else whatever sdpa picks."""
    return sdpa_kernel([SDPBackend.MATH]) if options.row_exact_attention else nullcontext()
