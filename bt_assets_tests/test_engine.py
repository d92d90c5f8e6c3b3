"""The decoding engine on tiny random Qwen2 / Llama models: batch invariance, exact baselines under
scale 1.0, per-row conditions, the prefill/decode gate, finish reasons; and one run of the demo model."""

from __future__ import annotations

import random

import pytest
import torch

from bt_assets.lib.engine import Completion, Request, SamplingConfig, generate
from bt_assets.lib.hooks import COMPONENTS, HookState, scale_table
from bt_assets.lib.sampling import stable_key
from bt_assets_tests.conftest import EOS_ID, GGUF, demo_dir, tiny_model

N_LAYERS = 4
SAMPLING = SamplingConfig(temperature=1.0, top_p=0.95, top_k=64, max_new_tokens=10, seed=11)
ZERO_MLP = {("mlp", layer): 0.0 for layer in range(N_LAYERS)}


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def model(request):
    return tiny_model(request.param)


def requests(conditions=(0,), samples: int = 2) -> list[Request]:
    rng = random.Random(0)
    prompts = [tuple(rng.randrange(49152) for _ in range(n)) for n in (3, 7, 5)]
    return [
        Request(stable_key(f"p{p}"), s, c, prompt, tag=(p, s, c))
        for p, prompt in enumerate(prompts)
        for s in range(samples)
        for c in conditions
    ]


def run(model, reqs, table=None, sampling=SAMPLING, eos=(), batch_size=8, **kw) -> dict[object, Completion]:
    table = scale_table([{}], N_LAYERS) if table is None else table
    return {
        c.request.tag: c
        for batch in generate(model, reqs, table, sampling, eos, pad_id=EOS_ID, batch_size=batch_size, **kw)
        for c in batch
    }


def tokens(out: dict[object, Completion]) -> dict[object, list[int]]:
    return {k: c.token_ids for k, c in out.items()}


def test_batch_size_and_order_invariance(model):
    reqs = requests(conditions=(0, 1))
    table = scale_table([{}, {("attn", 1): 0.0, ("mlp", 2): 0.5}], N_LAYERS)
    want = tokens(run(model, reqs, table, batch_size=1))
    assert all(len(t) == SAMPLING.max_new_tokens for t in want.values())
    assert len({tuple(t) for t in want.values()}) == len(want)  # distinct samples
    shuffled = reqs[:]
    random.Random(1).shuffle(shuffled)
    for bs, rs in ((3, reqs), (8, reqs), (5, shuffled), (64, shuffled)):
        assert tokens(run(model, rs, table, batch_size=bs)) == want


def test_scale_one_reproduces_baseline(model):
    reqs = requests()
    base = tokens(run(model, reqs))
    explicit = scale_table([{("mlp", 0): 1.0, ("attn", 3): 1.0}], N_LAYERS)
    assert tokens(run(model, reqs, explicit)) == base
    assert tokens(run(model, reqs, torch.ones(3, N_LAYERS, 2))) == base
    # condition 0 rows are hooked (condition 1 zeroes the MLPs) and multiplied by exactly 1.0
    state = HookState.empty()
    assert tokens(run(model, reqs, scale_table([{}, ZERO_MLP], N_LAYERS), hook_state_out=state)) == base
    assert state.counts[("decode", "mlp", 0)] > 0 and not state.applied


def test_per_row_conditions(model):
    base = tokens(run(model, requests()))
    mixed = tokens(run(model, requests(conditions=(0, 1)), scale_table([{}, ZERO_MLP], N_LAYERS)))
    assert {k: t for k, t in mixed.items() if k[2] == 0} == base
    ablated = {k[:2]: t for k, t in mixed.items() if k[2] == 1}
    assert all(t[0] == base[(*k, 0)][0] for k, t in ablated.items())  # first token: intact prefill
    assert any(t != base[(*k, 0)] for k, t in ablated.items())


def count_forwards(model, state: HookState) -> tuple[dict, object]:
    seen: dict[str, int] = {"prefill": 0, "decode": 0}

    def hook(_m, _i, _o):
        seen[state.phase] += 1

    return seen, model.register_forward_hook(hook)


def test_decode_only_hook_counts(model):
    table = scale_table([{}, {**ZERO_MLP, ("attn", 2): 0.5}], N_LAYERS)
    state = HookState.empty()
    seen, handle = count_forwards(model, state)
    try:
        run(model, requests(conditions=(0, 1)), table, batch_size=4, hook_state_out=state)
        run(model, requests(conditions=(1,), samples=1), table, batch_size=4, hook_state_out=state)
    finally:
        handle.remove()
    assert seen == {"prefill": 3 + 1, "decode": (3 + 1) * (SAMPLING.max_new_tokens - 1)}
    hooked = [
        (c, layer) for layer in range(N_LAYERS) for ci, c in enumerate(COMPONENTS) if table[1, layer, ci] != 1
    ]
    assert {(r["component"], r["layer"]) for r in state.count_table()} == set(hooked)
    for comp, layer in hooked:
        assert state.counts[("prefill", comp, layer)] == seen["prefill"]
        assert state.applied[("prefill", comp, layer)] == 0
        assert state.counts[("decode", comp, layer)] == seen["decode"]
        assert state.applied[("decode", comp, layer)] == seen["decode"]  # every batch holds condition 1
    cells = {(r["condition"], r["phase"], r["component"], r["layer"]): r for r in state.cell_table()}
    assert cells[(0, "decode", "mlp", 0)]["applied"] == 0 and cells[(0, "decode", "mlp", 0)]["calls"] > 0
    assert not any(
        state.cell_counts[(c, "prefill", comp, layer, "applied")] for c in (0, 1) for comp, layer in hooked
    )


def test_finish_reasons_and_lengths(model):
    reqs = requests()
    free = run(model, reqs)
    assert all(c.finish_reason == "length" and c.n_tokens == SAMPLING.max_new_tokens for c in free.values())
    key = next(iter(free))
    stop_tok = free[key].token_ids[3]
    first_tok = free[key].token_ids[0]
    out = run(model, reqs, eos=[stop_tok, first_tok], batch_size=4)
    for k, c in out.items():
        full = free[k].token_ids
        cut = next((i for i, t in enumerate(full) if t in (stop_tok, first_tok)), None)
        if cut is None:
            assert c.finish_reason == "length" and c.token_ids == full
        else:
            assert c.finish_reason == "stop" and c.token_ids == full[:cut] and c.n_tokens == cut + 1
    assert out[key].token_ids == [] and out[key].n_tokens == 1


def test_eos_bias_and_progress(model):
    def favour_eos(_m, _i, logits):
        return logits.index_fill(-1, torch.tensor([EOS_ID]), 1e4)  # EOS wins from the first step

    events = []
    handle = model.get_output_embeddings().register_forward_hook(favour_eos)
    try:
        out = run(model, requests(), batch_size=4, eos=[EOS_ID], progress=events.append)
    finally:
        handle.remove()
    assert all(c.finish_reason == "stop" and c.token_ids == [] and c.n_tokens == 1 for c in out.values())
    assert [e["rows_done"] for e in events] == [4, 6] and events[-1]["tokens"] == 6
    assert set(events[0]) == {"rows_done", "rows_total", "tokens", "tok_per_s", "eta_s"}


def test_demo_model_generates_text(demo_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(demo_dir(), gguf_file=GGUF).eval()
    tok = demo_tokenizer
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], tokenize=False, add_generation_prompt=True
    )
    prompt = tuple(tok(text, add_special_tokens=False)["input_ids"])
    n = len(model.model.layers)
    table = scale_table([{}, {("mlp", n - 1): 0.0}], n)
    reqs = [Request(stable_key("demo"), 0, c, prompt) for c in (0, 1)]
    sampling = SamplingConfig(temperature=0.7, top_p=0.95, top_k=64, max_new_tokens=8, seed=0)
    out = [c for b in generate(model, reqs, table, sampling, [tok.eos_token_id], tok.pad_token_id) for c in b]
    assert len(out) == 2 and all(1 <= c.n_tokens <= 8 for c in out)
    assert all(tok.decode(c.token_ids, skip_special_tokens=True).strip() for c in out)
    assert out[0].token_ids[0] == out[1].token_ids[0]  # decode-only: the first token is intact
