"""Onset resamples (the brief's Goal C, minimal intervention during generation; and onset stability).

For a BT event, the prefix is the sequence the model saw up to and including the token before the onset
(``Event.ids[: pred_pos + 1]``: the position whose logits chose the onset). From that prefix the model
samples ``samples`` continuations per condition:

* ``clean``: unhooked;
* ``ablated``: the chosen components scaled by ``scale`` for the first ``first_k_steps`` decode steps
  only (k = 1: only the step that chooses the onset token), unhooked afterwards.

Sample s of both conditions uses the same counter-based uniforms (seed, event key, s, step), so the two
form pairs that differ only by the intervention. The prefix runs once; its K/V are copied to the 2 x
``samples`` rows. Per continuation: whether it backtracks within the first ``window_tokens`` tokens (the
profile's detector on the window, a marker that opens it included), the phrase it opens with (the
substitution: "Actually" where the original said "Wait"), and, when it ends (EOS) within
``max_new_tokens``, whether the whole completion is correct. The clean rate is the onset's STABILITY:
how often the same prefix backtracks again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import polars as pl
import torch

from bt_assets.lib.engine import row_exact_attention, slab_cache
from bt_assets.lib.engine_options import EngineOptions
from bt_assets.lib.hooks import COMPONENTS, HookState, ablation_hooks, decoder_layers
from bt_assets.lib.onset_phrases import normalise_phrase
from bt_assets.lib.sampling import sample_logits, stable_key, uniforms
from bt_assets.lib.stats import N_BOOT, bootstrap_note
from bt_assets.lib.sweep_stats import paired_change  # a mean with its bootstrap-over-problems interval

CONDITIONS = ("clean", "ablated")
RESAMPLE_SCHEMA = {
    "event": pl.String,
    "example_id": pl.Int64,
    "condition": pl.String,
    "sample": pl.Int64,
    "new_tokens": pl.Int64,
    "bt_in_window": pl.Boolean,
    "bt_phrase": pl.String,
    "first_phrase": pl.String,
    "finished": pl.Boolean,
    "is_correct": pl.Boolean,
    "continuation": pl.String,
}


@dataclass(frozen=True)
class ResampleSpec:
    """How to resample: ``samples`` per condition; ``components`` scaled by ``scale`` for the first
    ``first_k_steps`` steps of the ablated rows; BT counted within ``window_tokens``; at most
    ``max_new_tokens`` per continuation; sampling as the generations (``temperature``, ``top_p``,
    ``top_k``) with uniforms keyed by ``seed``."""

    samples: int
    components: tuple[tuple[str, int], ...]
    scale: float
    first_k_steps: int
    window_tokens: int
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int


@dataclass(frozen=True)
class ResampleEvent:
    """A BT event to resample: ``ids[: pred_pos + 1]`` is the prefix (``prompt_len`` prompt tokens, then
    the completion before the onset); ``gold`` grades finished continuations (None: not graded)."""

    key: str
    example_id: int
    ids: tuple[int, ...]
    pred_pos: int
    prompt_len: int
    gold: str | None


@torch.inference_mode()
def continuations(
    model: torch.nn.Module, event: ResampleEvent, spec: ResampleSpec, eos_ids: Sequence[int]
) -> list[list[int]]:
    """The sampled ids of the 2 x ``samples`` rows (clean rows first, then ablated), each cut after its
    first EOS (EOS kept)."""
    dev = next(model.parameters()).device
    n_layers, n = len(decoder_layers(model)), spec.samples
    # at least the engine's row floor (CPU BLAS rounds small batches row by row differently, engine rule
    # 2): padding rows repeat clean sample 0 and are dropped
    rows = max(2 * n, EngineOptions.for_device(dev).min_decode_rows)
    condition = [0] * n + [1] * n + [0] * (rows - 2 * n)
    table = torch.ones(2, n_layers, len(COMPONENTS))
    for comp, layer in spec.components:
        table[1, layer, COMPONENTS.index(comp)] = spec.scale
    state = HookState(
        scales=table.to(dev),
        row_condition=torch.tensor(condition, device=dev),
        phase="teacher",
        decode_only=False,
    )
    prefix = torch.tensor(event.ids[: event.pred_pos + 1], device=dev).unsqueeze(0)
    cache = slab_cache(n_layers, event.pred_pos + 1 + spec.max_new_tokens)
    if event.pred_pos > 0:  # the prefix once, unhooked; its K/V copied to every row
        model(prefix[:, :-1], past_key_values=cache, use_cache=True, logits_to_keep=1)
    cache.batch_select_indices(torch.zeros(rows, dtype=torch.long, device=dev))
    token = prefix[:, -1:].expand(rows, 1)
    samples = torch.tensor([i % n if i < 2 * n else 0 for i in range(rows)], device=dev)  # pairs: same u
    key = torch.full((rows,), stable_key(event.key), device=dev)
    out = torch.empty(rows, spec.max_new_tokens, dtype=torch.long)
    done = torch.zeros(rows, dtype=torch.bool)
    eos = torch.tensor(list(eos_ids), dtype=torch.long)
    with ablation_hooks(model, state), row_exact_attention(model):  # rows of a pair compute alike
        for step in range(spec.max_new_tokens):
            if step == spec.first_k_steps:  # the intervention ends: every row unhooked from here on
                state.scales = torch.ones_like(state.scales)
            pos = torch.full((rows, 1), event.pred_pos + step, device=dev)
            logits = model(token, past_key_values=cache, position_ids=pos, use_cache=True).logits[:, -1]
            u = uniforms(spec.seed, key, samples, step)
            nxt = sample_logits(logits, u, spec.temperature, spec.top_p, spec.top_k)
            out[:, step] = nxt.cpu()
            done |= torch.isin(out[:, step], eos)
            if bool(done.all()):
                out = out[:, : step + 1]
                break
            token = nxt.unsqueeze(1)
    result = []
    for r in range(2 * n):
        ids = out[r].tolist()
        stop = next((i for i, t in enumerate(ids) if t in set(eos_ids)), None)
        result.append(ids if stop is None else ids[: stop + 1])
    return result


def score_rows(
    event: ResampleEvent,
    rows: Sequence[Sequence[int]],
    spec: ResampleSpec,
    decode: Callable[[Sequence[int]], str],
    detect: Callable[[str], tuple[bool, str]],
    grade: Callable[[str, str | None], bool | None],
    eos_ids: Sequence[int],
) -> list[dict]:
    """One ``RESAMPLE_SCHEMA`` row per continuation. ``decode``: ids -> text (special tokens skipped);
    ``detect``: window text -> (backtracks, phrase), the window read as the start of a clause; ``grade``:
    (whole completion, gold) -> correct (None: no answer)."""
    before = decode(event.ids[event.prompt_len : event.pred_pos + 1])
    n = spec.samples
    out = []
    for r, ids in enumerate(rows):
        finished = bool(ids) and ids[-1] in set(eos_ids)
        text = decode(list(ids))
        bt, phrase = detect(decode(list(ids[: spec.window_tokens])))
        words = text.split()
        out.append(
            {
                "event": event.key,
                "example_id": event.example_id,
                "condition": CONDITIONS[r // n],
                "sample": r % n,
                "new_tokens": len(ids),
                "bt_in_window": bt,
                "bt_phrase": normalise_phrase(phrase) if bt else None,
                "first_phrase": normalise_phrase(words[0]) if words else None,
                "finished": finished,
                "is_correct": grade(before + text, event.gold) if finished else None,
                "continuation": text,
            }
        )
    return out


def resample_table(
    model: torch.nn.Module,
    events: Sequence[ResampleEvent],
    spec: ResampleSpec,
    eos_ids: Sequence[int],
    decode: Callable[[Sequence[int]], str],
    detect: Callable[[str], tuple[bool, str]],
    grade: Callable[[str, str | None], bool | None],
    progress: Callable[[str], None] | None = None,
) -> pl.DataFrame:
    """``RESAMPLE_SCHEMA`` rows of every event (``continuations`` + ``score_rows``)."""
    rows: list[dict] = []
    for i, ev in enumerate(events):
        rows += score_rows(ev, continuations(model, ev, spec, eos_ids), spec, decode, detect, grade, eos_ids)
        if progress and (i + 1) % 10 == 0:
            progress(f"onset resamples: {i + 1}/{len(events)} events")
    return pl.DataFrame(rows, schema=RESAMPLE_SCHEMA) if rows else pl.DataFrame(schema=RESAMPLE_SCHEMA)


def resample_summary(df: pl.DataFrame, seed: int) -> dict:
    """Per condition: ``n`` continuations of ``n_events`` events from ``n_problems`` problems,
    ``bt_rate`` = P(BT within the window) with ``bt_rate_lo/_hi`` (95% bootstrap over problems),
    ``n_finished`` and ``accuracy_finished`` (correct / finished, with ``_lo/_hi``), and the top opening
    phrases. ``paired``: ``delta_bt`` = mean over (event, sample) pairs of ablated minus clean, with
    ``delta_bt_lo/_hi`` (bootstrap over problems), ``n_pairs``, and ``bt_pairs`` / ``bt_pair_problems``
    (pairs where either side backtracks, and their problems). ``stability`` = the clean ``bt_rate``."""
    out: dict = {
        "conditions": {},
        "paired": None,
        "stability": None,
        "interval_method": bootstrap_note(N_BOOT, seed),
    }
    if df.height == 0:
        return out
    for cond in CONDITIONS:
        rows = df.filter(pl.col("condition") == cond)
        prob = rows["example_id"].cast(pl.String).to_numpy()
        bt, bt_lo, bt_hi = paired_change(prob, rows["bt_in_window"].cast(pl.Float64).to_numpy(), seed)
        fin = rows.filter(pl.col("finished"))
        ok = fin["is_correct"].fill_null(False).cast(pl.Float64).to_numpy()
        acc, acc_lo, acc_hi = paired_change(fin["example_id"].cast(pl.String).to_numpy(), ok, seed)
        phrases = rows["first_phrase"].fill_null("?").value_counts(sort=True).head(3)
        out["conditions"][cond] = {
            "n": rows.height,
            "n_events": rows["event"].n_unique(),
            "n_problems": rows["example_id"].n_unique(),
            "bt_count": int(rows["bt_in_window"].sum()),
            "bt_rate": bt,
            "bt_rate_lo": bt_lo,
            "bt_rate_hi": bt_hi,
            "n_finished": fin.height,
            "accuracy_finished": acc,
            "accuracy_finished_lo": acc_lo,
            "accuracy_finished_hi": acc_hi,
            "first_phrases": ", ".join(f"{p} {k}" for p, k in phrases.iter_rows()),
        }
    clean = df.filter(pl.col("condition") == "clean")
    pairs = clean.join(df.filter(pl.col("condition") == "ablated"), on=["event", "sample"], suffix="_abl")
    diff = (pairs["bt_in_window_abl"].cast(pl.Float64) - pairs["bt_in_window"].cast(pl.Float64)).to_numpy()
    mean, lo, hi = paired_change(pairs["example_id"].cast(pl.String).to_numpy(), diff, seed)
    either = pairs.filter(pl.col("bt_in_window") | pl.col("bt_in_window_abl"))
    out["paired"] = {
        "delta_bt": mean,
        "delta_bt_lo": lo,
        "delta_bt_hi": hi,
        "n_pairs": pairs.height,
        "bt_pairs": either.height,
        "bt_pair_problems": either["example_id"].n_unique(),
    }
    out["stability"] = out["conditions"]["clean"]["bt_rate"]
    return out


def event_stability(df: pl.DataFrame) -> pl.DataFrame:
    """Per event: ``stability`` = share of its clean resamples that backtrack within the window."""
    clean = df.filter(pl.col("condition") == "clean")
    return clean.group_by("event").agg(pl.col("bt_in_window").cast(pl.Float64).mean().alias("stability"))
