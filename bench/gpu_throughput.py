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

Long-budget mode (issue 16, ``--long-budget``): the ``study`` profile's shape of work: 4096 new tokens,
T 0.6, top-p 0.95, no top-k, natural EOS with a realistic length distribution. The random model never
says EOS by itself, so a hook on the unembedding gives EOS a constant hazard per step (its probability
before the nucleus, ``--eos-hazard``, default ln 2 / 1200: median length about 1,200 tokens, about 9% of
rows at the 4096 cap, lengths from a few tokens to the cap, like R1's long tail). The rows live at once
are planned from free memory (``batch_plan``; ``--batch-size`` sets them by hand). Prints the length
distribution, tokens/s, live rows, peak memory and the hours the study profile's ~20,800 completions
would take; ``--compare-static`` also runs static batches of the same size and prints ``speedup: x``.

    python bench/gpu_throughput.py --long-budget                        # CUDA: 48 prompts x 8 x 2 rows
    python bench/gpu_throughput.py --long-budget --compare-static
    python bench/gpu_throughput.py --long-budget --tiny --device cpu --tokens 64 --prompts 4  # smoke test
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, Qwen2Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import generation as bench  # noqa: E402

from bt_assets.lib.engine import EngineOptions, Request, SamplingConfig, generate  # noqa: E402
from bt_assets.lib.hooks import scale_table  # noqa: E402

STUDY_COMPLETIONS = 20_800  # ~10,800 Phase-1 + ~10,000 Phase-2 completions of the study profile

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


def eos_hazard_hook(eos: int, hazard: float, temperature: float):
    """A forward hook on the unembedding: EOS gets probability ``hazard`` (at ``temperature``, before the
    nucleus) at every position, whatever the other logits: a constant per-step stopping chance."""
    odds = math.log(hazard / (1 - hazard))

    def hook(_m, _inputs, logits: torch.Tensor) -> torch.Tensor:
        z = logits.float() / temperature
        z[..., eos] = -math.inf
        out = logits.clone()
        out[..., eos] = (temperature * (odds + torch.logsumexp(z, dim=-1))).to(logits.dtype)
        return out

    return hook


def long_budget(args: argparse.Namespace, model: torch.nn.Module) -> None:
    """The study profile's long budget: continuous batching, planned rows, natural (hazard) EOS."""
    n_layers, eos, cuda = model.config.num_hidden_layers, 0, args.device.startswith("cuda")
    conditions = [{}, {("mlp", n_layers - 1): 0.0, ("mlp", n_layers - 2): 0.0, ("attn", n_layers - 1): 0.0}]
    table = scale_table(conditions, n_layers)
    gen = torch.Generator().manual_seed(1)
    lens = torch.randint(args.prompt_len // 2, args.prompt_len * 3 // 2, (args.prompts,), generator=gen)
    prompts = [torch.randint(1, model.config.vocab_size, (int(n),), generator=gen).tolist() for n in lens]
    reqs = [
        Request(problem_key=p, sample_id=s, condition=c, prompt_ids=tuple(ids))
        for p, ids in enumerate(prompts)
        for s in range(args.samples)
        for c in range(len(conditions))
    ]
    sampling = SamplingConfig(temperature=0.6, top_p=0.95, top_k=0, max_new_tokens=args.tokens, seed=42)
    handle = model.get_output_embeddings().register_forward_hook(eos_hazard_hook(eos, args.eos_hazard, 0.6))
    base = EngineOptions.for_device(args.device)
    rows = args.batch_size if args.batch_size_set else None
    width = max(map(len, prompts))
    print(f"{len(reqs)} rows, prompts {min(lens)}-{max(lens)} tokens, {args.tokens} new tokens", flush=True)

    def side(scheduler: str, rows: int | None) -> tuple[float, int, list[int]]:
        events: list[dict] = []
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        opts = replace(base, scheduler=scheduler)
        out = generate(
            model, reqs, table, sampling, [eos], pad_id=eos, batch_size=rows, prompt_width=width,
            options=opts, progress=events.append,
        )  # fmt: skip
        lengths = [c.n_tokens for batch in out for c in batch]
        sync(args.device)
        wall = time.perf_counter() - t
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        live = max((e.get("max_rows", rows or 0) for e in events), default=rows or 0)
        print(
            f"{scheduler}: {sum(lengths):,} tokens in {wall:.1f}s = {sum(lengths) / wall:,.0f} tok/s, "
            f"live rows {live}, peak memory {peak:.1f} GiB",
            flush=True,
        )
        return wall, live, lengths

    try:
        wall, live, lengths = side("continuous", rows)
        q = statistics.quantiles(lengths, n=20)
        print(
            f"lengths: median {statistics.median(lengths):.0f}, p25 {q[4]:.0f}, p75 {q[14]:.0f}, "
            f"p95 {q[18]:.0f}, mean {statistics.mean(lengths):.0f}; "
            f"{sum(n >= args.tokens for n in lengths) / len(lengths):.0%} at the cap"
        )
        rate = sum(lengths) / wall
        hours = STUDY_COMPLETIONS * statistics.mean(lengths) / rate / 3600
        print(
            f"study profile estimate ({STUDY_COMPLETIONS:,} completions at this mean length): {hours:.2f} h"
        )
        if args.compare_static:
            wall_static, _, _ = side("static", live)
            print(f"speedup: {wall_static / wall:.2f}")
    finally:
        handle.remove()


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
    ap.add_argument("--long-budget", action="store_true", help="the study profile's 4096-token budget")
    ap.add_argument("--eos-hazard", type=float, default=math.log(2) / 1200, help="long budget: P(EOS)/step")
    ap.add_argument("--compare-static", action="store_true", help="long budget: also static batches")
    args = ap.parse_args()
    args.batch_size_set = any(a.startswith("--batch-size") for a in sys.argv[1:])
    dtype = getattr(torch, args.dtype)
    model = build(args.tiny, args.device, dtype)
    if args.long_budget:
        if not any(a.startswith(("--tokens", "--prompts", "--samples")) for a in sys.argv[1:]):
            args.tokens, args.prompts, args.samples = 4096, 48, 8
        long_budget(args, model)
        return
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
