"""GPU throughput of the engine at the real model's size (issue: >= 10,000 generated tok/s at 512 tokens).

No weights can be downloaded, so the model is DeepSeek-R1-Distill-Qwen-1.5B's architecture (Qwen2, 28
layers, hidden 1536, 12 query / 2 KV heads, MLP 8960, vocab 151,936) randomly initialised in bf16: the
FLOPs, memory traffic and KV-cache sizes are the real model's; the text is noise. Random prompts of
``--prompt-len`` tokens, ``--samples`` samples x 2 conditions (baseline; 3 late MLP/attention layers
zeroed during decode) per prompt, ``--tokens`` forced new tokens per row (no EOS).
(a) the original's method re-created on ``--baseline-prompts`` prompts: HF ``generate`` per prompt and
    condition with ``num_return_sequences = samples``, bf16 (the original's dtype), decode-only hooks;
(b) the engine with all rows of ``--batch-size`` in one batch.
Prints tok/s of each, peak GPU memory, and as its last line ``speedup: <b over a>``.

    python bench/gpu_throughput.py                       # on a CUDA machine: 64 prompts x 4 x 2 x 512
    python bench/gpu_throughput.py --tiny --device cpu   # smoke test of the script on a CPU (tiny config)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, Qwen2Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import generation as bench  # noqa: E402

R1_DISTILL_QWEN_1_5B = dict(
    vocab_size=151936,
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    max_position_embeddings=131072,
    rope_theta=10000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)
TINY = dict(R1_DISTILL_QWEN_1_5B, vocab_size=49152, hidden_size=64, intermediate_size=128,
            num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2)  # fmt: skip


def build(tiny: bool, device: str, dtype: torch.dtype) -> torch.nn.Module:
    cfg = Qwen2Config(**(TINY if tiny else R1_DISTILL_QWEN_1_5B), attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a 4-layer model (smoke test of the script)")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=160)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--baseline-prompts", type=int, default=2)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    model = build(args.tiny, args.device, dtype)
    n_layers = model.config.num_hidden_layers
    conditions = [{}, {("mlp", n_layers - 1): 0.0, ("mlp", n_layers - 2): 0.0, ("attn", n_layers - 1): 0.0}]
    gen = torch.Generator().manual_seed(1)
    vocab = model.config.vocab_size
    prompt_ids = [
        torch.randint(1, vocab, (args.prompt_len,), generator=gen).tolist() for _ in range(args.prompts)
    ]
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    print(
        f"{'tiny' if args.tiny else 'R1-Distill-Qwen-1.5B-shaped'} random model ({args.dtype}) on {name}: "
        f"{args.prompts} prompts x {args.prompt_len} tokens x {args.samples} samples x 2 conditions x "
        f"{args.tokens} new tokens, batch <= {args.batch_size}; torch {torch.__version__}",
        flush=True,
    )

    class Tok:  # the original loop needs only an EOS id for padding
        eos_token_id = 0

    # warm-up (CUDA context, kernels), then (b) and (a)
    bench.engine_run(model, prompt_ids[:2], 1, 8, conditions, args.batch_size)
    sync(args.device)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    bench.engine_run(model, prompt_ids, args.samples, args.tokens, conditions, args.batch_size)
    sync(args.device)
    t_b = time.perf_counter() - t
    rows = args.prompts * args.samples * len(conditions)
    rate_b = rows * args.tokens / t_b
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
    print(
        f"(b) bt engine: {rows} rows, {rate_b:,.0f} tok/s ({t_b:.1f}s), peak memory {peak:.1f} GiB",
        flush=True,
    )

    k = args.baseline_prompts
    t = time.perf_counter()
    bench.original_loop(model, Tok(), prompt_ids, args.samples, args.tokens, conditions, limit=k)
    sync(args.device)
    t_a = time.perf_counter() - t
    rate_a = k * args.samples * len(conditions) * args.tokens / t_a
    print(f"(a) original loop on {k} prompts: {rate_a:,.0f} tok/s ({t_a:.1f}s)")
    print(
        f"whole-Phase-2 estimate (2.7 M tokens): {2.7e6 / rate_b / 60:.1f} min (b), "
        f"{2.7e6 / rate_a / 3600:.1f} h (a)"
    )
    print(f"speedup: {rate_b / rate_a:.1f}")


if __name__ == "__main__":
    main()
