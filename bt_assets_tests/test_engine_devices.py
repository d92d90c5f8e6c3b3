"""The engine's device options (``EngineOptions``) on tiny random Qwen2 / Llama models: the CPU defaults
are the bit-exact path (16-row floor, math attention kernel); options without the row floor (explicit, or
the CUDA defaults) decode unpadded and validly on CPU; and, marked ``gpu`` and skipped without a CUDA
device, the CUDA paths: the defaults there, valid fp32/bf16 completions, scale 1.0 = baseline within one
batch, decode-only hooks. The request and run helpers come from test_engine.py."""

from __future__ import annotations

import pytest
import torch

from bt_assets.lib.engine import EngineOptions
from bt_assets.lib.hooks import scale_table
from bt_assets_tests import test_engine as base
from bt_assets_tests.conftest import tiny_model
from bt_assets_tests.test_engine import (
    CPU,
    CPU_FLOOR,
    N_LAYERS,
    SAMPLING,
    ZERO_MLP,
    requests,
    run,
    tokens,
)

CUDA = torch.device("cuda")

pytestmark = pytest.mark.slow  # every test here builds or loads a model (or times BLAS kernels)


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def model(request):
    return tiny_model(request.param)


def trace(model, fn) -> tuple[list[int], set[bool], object]:
    """(rows the unembedding multiplies in each forward: the prefill, then each decode step; whether
    sdpa's flash kernel was allowed in the forwards (off under the math kernel); ``fn()``)."""
    rows: list[int] = []
    flash: set[bool] = set()
    head = model.get_output_embeddings()
    handles = [
        head.register_forward_pre_hook(lambda _m, args: rows.append(args[0].shape[0] * args[0].shape[1])),
        model.register_forward_pre_hook(lambda *_: flash.add(torch.backends.cuda.flash_sdp_enabled())),
    ]
    try:
        out = fn()
    finally:
        for h in handles:
            h.remove()
    return rows, flash, out


def test_cpu_options_are_the_bit_exact_path(model):
    """On a CPU model ``options=None`` = ``EngineOptions.for_device(cpu)``: 3 rows run as the floor's 16
    (padding rows) in the prefill and in every decode step, under the math attention kernel; explicit
    CPU options give the very same completions."""
    reqs = requests()[:3]
    rows, flash, default = trace(model, lambda: run(model, reqs))
    assert rows == [CPU_FLOOR] * SAMPLING.max_new_tokens and flash == {False}
    assert tokens(run(model, reqs, options=CPU)) == tokens(default)


def check_unpadded_decode(model, options: EngineOptions | None) -> None:
    """Options with row floor 1: 3 rows of 2 prompts run as 2 prefill rows and 3 decode rows (no
    padding), a row that stops leaves the batch at the next EOS check, and the completions are valid.
    The attention kernel is the options' one."""
    reqs, steps = requests()[:3], SAMPLING.max_new_tokens
    rows, flash, free = trace(model, lambda: run(model, reqs, options=options))
    assert rows == [2] + [3] * (steps - 1)
    opts = options or EngineOptions.for_device(next(model.parameters()).device)
    assert flash == {not opts.row_exact_attention}
    for c in free.values():
        assert c.finish_reason == "length" and len(c.token_ids) == steps
        assert all(0 <= t < model.config.vocab_size for t in c.token_ids)
    first = reqs[0].tag
    stop = free[first].token_ids[1]
    rows, _, out = trace(model, lambda: run(model, reqs, eos=[stop], options=options))
    cut = free[first].token_ids.index(stop)
    assert out[first].finish_reason == "stop" and out[first].token_ids == free[first].token_ids[:cut]
    assert rows[:2] == [2, 3] and min(rows) == 2  # the stopped row left; nothing padded it back
    assert all(1 <= c.n_tokens <= steps for c in out.values())


@pytest.mark.parametrize(
    "options",
    [EngineOptions(min_decode_rows=1, eos_check_every=1), EngineOptions.for_device(CUDA)],
    ids=["cpu_floor_1", "cuda_defaults"],
)
def test_unpadded_options_generate_valid_completions_on_cpu(model, options):
    """Explicit options without the row floor still decode correctly on CPU (not bit-exact across batch
    sizes there: rule 2 of the engine docstring). The CUDA defaults (floor 1, an EOS check every 8
    steps, no math kernel) run on CPU too, so their code path is exercised without a GPU."""
    check_unpadded_decode(model, options)


# --- CUDA: marked gpu, skipped without a CUDA device ------------------------------------------------
# On a GPU nothing is batch-invariant (rule 6 of the engine docstring): these tests check the CUDA
# defaults, valid completions, and equalities that hold within ONE batch or for identical shapes.

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def cuda_model(request):
    return tiny_model(request.param).to(CUDA)


@pytest.mark.gpu
@needs_cuda
def test_cuda_defaults_do_not_pad_rows(cuda_model):
    """``options=None`` on a CUDA model = ``EngineOptions.for_device(cuda)``: row floor 1, so 3 rows
    decode as 3 (not 16), a stopped row leaves at the next EOS check (every 8 steps there), and sdpa may
    pick its fused kernels."""
    assert EngineOptions.for_device(CUDA).min_decode_rows == 1
    check_unpadded_decode(cuda_model, None)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_generation_is_valid(cuda_model, dtype):
    """fp32 and bf16 on CUDA: every row decodes to its length or its EOS, and ablated rows share the
    baseline's first token (decode-only hooks leave the shared prefill alone)."""
    model = cuda_model.to(dtype)
    try:
        reqs = requests(conditions=(0, 1))
        table = scale_table([{}, ZERO_MLP], N_LAYERS)
        free = run(model, reqs, table, batch_size=64)
        assert set(free) == {r.tag for r in reqs}
        for (p, s, _), comp in free.items():
            assert comp.finish_reason == "length" and len(comp.token_ids) == SAMPLING.max_new_tokens
            assert all(0 <= t < model.config.vocab_size for t in comp.token_ids)
            assert comp.token_ids[0] == free[(p, s, 0)].token_ids[0]
        # the same batch: on a GPU only identical shapes promise identical tokens up to the stop
        out = run(model, reqs, table, eos=[free[(0, 0, 0)].token_ids[2]], batch_size=64)
        assert out[(0, 0, 0)].finish_reason == "stop" and all(c.n_tokens >= 1 for c in out.values())
    finally:
        cuda_model.to(torch.float32)


@pytest.mark.gpu
@needs_cuda
def test_cuda_scale_one_equals_baseline_in_one_batch(cuda_model):
    """One batch holds the baseline, an explicit scale-1.0 condition and a zero-MLP condition (so the
    hooks run and multiply conditions 0 and 1 by exactly 1.0): identical rows give identical tokens."""
    reqs = requests(conditions=(0, 1, 2))
    table = scale_table([{}, {("mlp", 0): 1.0, ("attn", 3): 1.0}, ZERO_MLP], N_LAYERS)
    out = tokens(run(cuda_model, reqs, table, batch_size=len(reqs)))
    pairs = {(p, s) for p, s, _ in out}
    assert all(out[(p, s, 1)] == out[(p, s, 0)] for p, s in pairs)
    assert any(out[(p, s, 2)] != out[(p, s, 0)] for p, s in pairs)


@pytest.mark.gpu
@needs_cuda
def test_cuda_decode_only_hooks(cuda_model):
    """The CPU test's hook counts hold on CUDA: hooks count every forward, scale only decode steps."""
    base.test_decode_only_hook_counts(cuda_model)
