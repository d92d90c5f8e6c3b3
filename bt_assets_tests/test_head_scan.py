"""The head scan on tiny random Qwen2 / Llama models: the shared-prefix scan equals one full forward per
head (brute force), every head of a layer at 0 is the attention block at 0, and the head selection."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from bt_assets.lib import head_scan, teacher
from bt_assets.lib.hooks import decoder_layers
from bt_assets_tests.conftest import tiny_model

TOL = 1e-4  # fp32: the cached one-position step and a full forward differ only in summation order


@pytest.fixture(scope="module", params=[pytest.param(a, marks=pytest.mark.slow) for a in ("qwen2", "llama")])
def model(request):
    return tiny_model(request.param, seed=1)


def events(n: int = 3) -> list[teacher.Event]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        length = 10 + 4 * i
        ids = torch.randint(0, 49152, (length,), generator=g).tolist()
        out.append(teacher.Event(f"v/{i % 2}/{i}", tuple(ids), length - 2, ids[-1]))
    return out


def test_head_scan_equals_bruteforce(model):
    n_layers, n_heads = len(decoder_layers(model)), model.config.num_attention_heads
    table, variants = head_scan.head_table(n_layers, n_heads, range(n_layers), 0.0)
    assert len(variants) == n_layers * n_heads and table.shape == (1 + len(variants), n_layers, n_heads)
    for ev in [*events(), teacher.Event("p", (5, 6, 7), 0, 6)]:  # pred_pos 0: no prefix at all
        fast = head_scan.score_heads_at_onset(model, ev, table)
        slow = head_scan.scan_heads_bruteforce(model, ev, table)
        assert fast.shape == slow.shape == (1 + len(variants), 49152)
        assert torch.allclose(fast, slow, atol=TOL, rtol=0), float((fast - slow).abs().max())
        clean = teacher.scan_bruteforce(model, ev, torch.ones(1, n_layers, 2))
        assert torch.allclose(fast[:1], clean, atol=TOL, rtol=0)
        assert (fast[1:, ev.target] != fast[0, ev.target]).all()  # every head matters somewhat


def test_all_heads_of_a_layer_are_its_attention_block(model):
    n_layers, n_heads = len(decoder_layers(model)), model.config.num_attention_heads
    heads = torch.ones(2, n_layers, n_heads)
    heads[1, 2] = 0.0
    attn, _ = teacher.single_component_table(n_layers, ["attn"], [2], 0.0)
    ev = events(1)[0]
    assert torch.equal(
        head_scan.score_heads_at_onset(model, ev, heads), teacher.score_at_onset(model, ev, attn)
    )


def test_head_scan_table_and_selection(model):
    scan = head_scan.head_scan_table(model, events(), [1, 3], 0.0)
    n_heads = model.config.num_attention_heads
    assert scan.height == 2 * n_heads and set(scan["layer"]) == {1, 3}
    assert scan["delta_logit_mean"].is_sorted()
    assert {"delta_logit_mean_lo", "delta_logit_mean_hi", "delta_logprob_mean", "n_events"} <= set(
        scan.columns
    )
    top = head_scan.select_heads(scan, 3)
    assert top == [(r["layer"], r["head"]) for r in scan.head(3).iter_rows(named=True)]


def test_select_heads_rules():
    scan = pl.DataFrame(
        {
            "layer": [0, 0, 1, 1],
            "head": [0, 1, 0, 1],
            "delta_logit_mean": [-1.0, 0.5, -1.0, float("nan")],
            "delta_logprob_mean": [0.1, -0.2, 0.3, 0.0],
        }
    )
    assert head_scan.select_heads(scan, None) == [(0, 0), (1, 0), (0, 1)]  # ties by layer; nan dropped
    assert head_scan.select_heads(scan, 5, require_negative=True) == [(0, 0), (1, 0)]
    assert head_scan.select_heads(scan, 1, "delta_logprob") == [(0, 1)]
