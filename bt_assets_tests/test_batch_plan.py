"""The batch planner (``bt_assets.lib.batch_plan``): KV bytes per token and rows from free memory, with the
numbers for DeepSeek-R1-Distill-Qwen-1.5B's shapes worked out by hand."""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import Qwen2Config

from bt_assets.lib.batch_plan import CPU_DEFAULT_ROWS, KVShape, plan_for, plan_rows

GIB = 2**30
R1 = KVShape(n_layers=28, n_kv_heads=2, head_dim=128, dtype_bytes=2)  # bf16


class R1Stub(nn.Module):
    """DeepSeek-R1-Distill-Qwen-1.5B's config (no weights) with a bf16 parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.config = Qwen2Config(
            hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2
        )
        self.w = nn.Parameter(torch.zeros(1, dtype=torch.bfloat16))


def test_r1_kv_bytes_per_token_by_hand():
    # K and V (2) x 28 layers x 2 KV heads x 128 dims x 2 bytes (bf16)
    assert R1.bytes_per_token == 2 * 28 * 2 * 128 * 2 == 28_672


def test_r1_shape_from_its_config():
    """``KVShape.of`` reads the R1 config (12 query heads of 1536 / 12 = 128 dims, 2 KV heads) and dtype."""
    assert KVShape.of(R1Stub()) == R1


def test_r1_rows_on_an_80_gib_gpu_by_hand():
    """4096 new tokens + a 256-token prompt width = 4,352 positions x 28,672 bytes = 124,780,544 bytes
    of KV per row, + 8 float32 x 151,936 vocabulary entries = 4,861,952 bytes of sampling workspace =
    129,642,496 bytes (123.6 MiB) per row. 76 GiB free (an 80 GB H100 after the 3.5 GB of weights):
    0.9 x 81,604,378,624 = 73,443,940,761 usable bytes -> 566 rows (566.5)."""
    plan = plan_rows(R1, free_bytes=76 * GIB, prompt_width=256, max_new_tokens=4096, vocab_size=151_936)
    assert plan.positions == 4352
    assert plan.bytes_per_row == 4352 * 28_672 + 8 * 4 * 151_936 == 129_642_496
    assert plan.rows == 73_443_940_761 // 129_642_496 == 566
    assert "566 rows x 4352 positions" in plan.describe()


def test_plan_limits():
    """At most ``max_rows``; at least one row even when nothing fits; a shorter budget fits more rows."""
    kw = {"prompt_width": 256, "vocab_size": 151_936}
    assert plan_rows(R1, free_bytes=76 * GIB, max_new_tokens=4096, max_rows=128, **kw).rows == 128
    assert plan_rows(R1, free_bytes=GIB // 10, max_new_tokens=4096, **kw).rows == 1
    short = plan_rows(R1, free_bytes=76 * GIB, max_new_tokens=512, **kw).rows
    assert short == int(76 * GIB * 0.9) // (768 * 28_672 + 4_861_952) == 2_732


def test_a_planned_run_logs_its_plan(caplog):
    """``plan_for`` on a model (here the R1 shape stub on CPU, capped at ``CPU_DEFAULT_ROWS``) logs the
    plan's line, so the run log says where the live-row count came from."""
    with caplog.at_level(logging.INFO, logger="bt_assets.lib.batch_plan"):
        plan = plan_for(R1Stub(), prompt_width=256, max_new_tokens=4096)
    assert plan.rows == CPU_DEFAULT_ROWS
    assert [r.getMessage() for r in caplog.records] == [plan.describe()]
    assert "28,672 KV bytes/token" in plan.describe()
