"""Ablation hooks on tiny random Qwen2 / Llama models: exactness of 1.0, per-row and per-position scaling,
the prefill/decode gate, counting, and cleanup."""

from __future__ import annotations

import pytest
import torch

from bt_assets.lib import hooks
from bt_assets.lib.hooks import COMPONENTS, HookState, ablation_hooks, decoder_layers, scale_table
from bt_assets_tests.conftest import tiny_model

N_LAYERS = 4
SLOW = pytest.mark.slow  # every test that uses ``model`` (or builds one) loads a tiny model


@pytest.fixture(scope="module", params=[pytest.param(a, marks=SLOW) for a in ("qwen2", "llama")])
def model(request):
    return tiny_model(request.param)


def ids(b: int = 2, t: int = 7, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 49152, (b, t), generator=torch.Generator().manual_seed(seed))


@torch.inference_mode()
def logits(model, x: torch.Tensor, state: HookState | None = None) -> torch.Tensor:
    if state is None:
        return model(x).logits
    with ablation_hooks(model, state):
        return model(x).logits


def state_for(conditions, rows, phase="teacher", decode_only=False, positions=None) -> HookState:
    return HookState(
        scales=scale_table(conditions, N_LAYERS),
        row_condition=torch.tensor(rows),
        phase=phase,
        decode_only=decode_only,
        positions=positions,
    )


ZERO_MLP = {("mlp", layer): 0.0 for layer in range(N_LAYERS)}


def test_scale_table_shape_and_errors():
    table = scale_table([{}, {("mlp", 2): 0.0, ("attn", 0): 0.5}], N_LAYERS)
    assert table.shape == (2, N_LAYERS, 2) and table.dtype == torch.float32
    assert table[1, 2, COMPONENTS.index("mlp")] == 0.0 and table[1, 0, COMPONENTS.index("attn")] == 0.5
    assert int((table != 1).sum()) == 2
    with pytest.raises(ValueError, match="'resid'"):
        scale_table([{("resid", 0): 0.0}], N_LAYERS)
    with pytest.raises(ValueError, match="layer 4 out of range"):
        scale_table([{("mlp", 4): 0.0}], N_LAYERS)
    with pytest.raises(ValueError, match="layer -1"):
        scale_table([{("attn", -1): 0.0}], N_LAYERS)


def test_modules(model):
    assert len(decoder_layers(model)) == N_LAYERS
    assert hooks.component_module(model, 1, "attn") is decoder_layers(model)[1].self_attn
    assert hooks.component_module(model, 1, "mlp") is decoder_layers(model)[1].mlp


def test_all_ones_registers_nothing(model):
    state = state_for([{}, {("mlp", 1): 1.0, ("attn", 3): 1.0}], [0, 1])
    with ablation_hooks(model, state):
        assert not any(m._forward_hooks for m in model.modules())
    assert torch.equal(logits(model, ids(), state), logits(model, ids()))
    assert not state.counts


def test_hooks_only_scaled_modules_and_removed_on_error(model):
    state = state_for([{}, {("mlp", 2): 0.0}], [0, 1])
    with pytest.raises(RuntimeError, match="boom"), ablation_hooks(model, state):
        hooked = [n for n, m in model.named_modules() if m._forward_hooks]
        assert hooked == ["model.layers.2.mlp"]
        raise RuntimeError("boom")
    assert not any(m._forward_hooks for m in model.modules())


def test_table_must_fit_model(model):
    state = HookState(scales=torch.zeros(1, N_LAYERS - 1, 2), row_condition=torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="does not fit"), ablation_hooks(model, state):
        pass


def test_zero_mlp_changes_logits(model):
    x = ids(1)
    assert not torch.allclose(logits(model, x, state_for([ZERO_MLP], [0])), logits(model, x))


def test_per_row_scales_hit_only_their_rows(model):
    x = ids(3)
    state = state_for([{}, {**ZERO_MLP, ("attn", 1): 0.5}], [0, 1, 0])
    base, hooked = logits(model, x), logits(model, x, state)
    assert torch.equal(hooked[[0, 2]], base[[0, 2]])  # x * 1.0 is exact: bit-identical rows
    assert not torch.allclose(hooked[1], base[1])
    assert state.applied[("teacher", "mlp", 0)] == 1 and state.counts[("teacher", "attn", 1)] == 1


def test_positions_scale_one_position_only(model):
    x = torch.cat([ids(1, seed=2)] * 2)  # the same sequence twice; ablate at different positions
    state = state_for([ZERO_MLP], [0, 0], positions=torch.tensor([3, -1]))
    base, hooked = logits(model, x), logits(model, x, state)
    assert torch.equal(hooked[0, :3], base[0, :3])  # causal: nothing before the position changes
    assert not torch.allclose(hooked[0, 3], base[0, 3])
    assert torch.equal(hooked[1, :-1], base[1, :-1])
    assert not torch.allclose(hooked[1, -1], base[1, -1])


def test_decode_only_skips_prefill_and_counts(model):
    x = ids(2)
    state = state_for([{}, ZERO_MLP], [0, 1], phase="prefill", decode_only=True)
    assert torch.equal(logits(model, x, state), logits(model, x))
    assert state.counts[("prefill", "mlp", 0)] == 1 and state.applied[("prefill", "mlp", 0)] == 0
    state.phase = "decode"
    assert not torch.equal(logits(model, x, state), logits(model, x))
    logits(model, x, state)  # counters accumulate across contexts
    rows = {(r["phase"], r["component"], r["layer"]): r for r in state.count_table()}
    assert set(rows) == {(p, "mlp", layer) for p in ("prefill", "decode") for layer in range(N_LAYERS)}
    assert rows[("decode", "mlp", 3)] == {
        "phase": "decode",
        "component": "mlp",
        "layer": 3,
        "calls": 2,
        "applied": 2,
    }
    cells = {(r["condition"], r["phase"], r["layer"]): r for r in state.cell_table()}
    assert cells[(0, "decode", 0)]["applied"] == 0 and cells[(1, "decode", 0)]["applied"] == 2
    assert cells[(1, "prefill", 0)] == {
        "condition": 1,
        "phase": "prefill",
        "component": "mlp",
        "layer": 0,
        "calls": 1,
        "applied": 0,
    }


def test_batch_without_scaled_rows_is_not_applied(model):
    state = state_for([{}, ZERO_MLP], [0, 0])
    assert torch.equal(logits(model, ids(), state), logits(model, ids()))
    assert state.counts[("teacher", "mlp", 0)] == 1 and state.applied[("teacher", "mlp", 0)] == 0


def test_row_condition_read_at_call_time(model):
    x = ids(2)
    state = state_for([{}, ZERO_MLP], [0, 0])
    with torch.inference_mode(), ablation_hooks(model, state):
        first = model(x).logits
        state.row_condition = torch.tensor([1, 0])
        second = model(x).logits
    assert torch.equal(first, logits(model, x)) and torch.equal(second[1], first[1])
    assert not torch.allclose(second[0], first[0])


@SLOW
def test_bf16_keeps_dtype_and_exactness():
    model = tiny_model("llama").to(torch.bfloat16)
    state = state_for([{}, {("attn", 0): 0.3}], [0, 1])
    seen = []
    handle = decoder_layers(model)[0].self_attn.register_forward_hook(lambda m, i, o: seen.append(o[0].dtype))
    try:
        base, hooked = logits(model, ids()), logits(model, ids(), state)
    finally:
        handle.remove()
    assert hooked.dtype == torch.bfloat16 and set(seen) == {torch.bfloat16}
    assert torch.equal(hooked[0], base[0]) and not torch.equal(hooked[1], base[1])
