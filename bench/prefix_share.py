"""What sharing the prompts' common prefix would save (issue 16, item 3), measured on a profile's prompts.

Renders the profile's prompts (its problems, variants and prompt style) with the profile's tokenizer,
and per variant reports the mean prompt length and the prefix every prompt of that variant shares
(the chat template and the instruction text before the question). Today each DISTINCT prompt is
prefilled once per batch (all samples and conditions of a problem share that prefill), so what prefix
sharing could still save is the shared prefix's tokens once per distinct prompt: in prefill compute,
and in KV memory per live row. Both are set against a row's whole work: its prompt plus ``--gen``
generated tokens (default 1,200: the median of the long-budget bench's length distribution).

    python bench/prefix_share.py --profile demo
    python bench/prefix_share.py --profile demo --gen 69   # the demo budget's median length
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bt_assets.config import load_profile, resolve_path  # noqa: E402
from bt_assets.lib import problems as problems_lib  # noqa: E402
from bt_assets.lib.modeling import load_tokenizer  # noqa: E402
from bt_assets.lib.prompts import prompt_table  # noqa: E402
from bt_assets.lib.synthetic import synthetic_problems  # noqa: E402


def common_prefix(rows: list[list[int]]) -> int:
    first, n = rows[0], len(rows[0])
    for r in rows[1:]:
        n = next((i for i, (a, b) in enumerate(zip(first[:n], r, strict=False)) if a != b), min(n, len(r)))
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--gen", type=int, default=1200, help="generated tokens per row (median)")
    args = ap.parse_args()
    profile = load_profile(args.profile)
    ds = profile.dataset
    if ds.source == "synthetic":
        problems = synthetic_problems(ds.n, ds.seed)
    elif ds.source == "jsonl":
        problems = problems_lib.load_jsonl(resolve_path(ds.path)).head(ds.n)
    else:
        sys.exit(f"profile {args.profile}: dataset.source {ds.source!r} needs the hub; use a local profile")
    tok = load_tokenizer(profile.model)
    from bt_assets.assets import wiring as w

    table = prompt_table(problems, w.variants(profile), w.prompt_style(profile), tok, profile.model.add_bos)
    print(f"profile {args.profile}: {problems.height} problems, tokenizer {profile.model.id}")
    for (variant,), g in table.group_by("variant", maintain_order=True):
        ids = tok(g["prompt"].to_list(), add_special_tokens=profile.model.add_bos)["input_ids"]
        mean_len = sum(map(len, ids)) / len(ids)
        shared = common_prefix(ids)
        row = mean_len + args.gen
        print(
            f"  {variant}: prompt {mean_len:.1f} tokens, shared prefix {shared} ({shared / mean_len:.0%} of"
            f" the prompt); of a row's {row:.0f} tokens (prompt + {args.gen} generated) the prefix is"
            f" {shared / row:.1%}: the most prefix sharing saves in prefill and KV memory per row"
        )


if __name__ == "__main__":
    main()
