"""Component means: the average write of every attention block and MLP into the residual stream over
the decode positions of baseline completions (what mean ablation replaces an output by).

A baseline completion is teacher-forced as the engine fed it: the prompt ids, then the sampled ids.
Its decode positions are those the engine ran in phase "decode": every completion token that was fed
back (the token sampled at step t is fed at step t + 1), i.e. positions ``[len(prompt),
len(prompt) + n_fed)`` with ``n_fed`` = the completion's ids for a stop (the EOS is never fed) and all
but the last for a "length" finish. The prompt positions (the prefill, never intervened on) are not
averaged. Per (component, layer) the mean is over all those positions of all completions pooled (the
denominator is positions, not completions: long completions weigh more, as they do in decoding).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
import torch

from bt_assets.lib.hooks import COMPONENTS, component_module, decoder_layers

MEANS_SCHEMA = {
    "component": pl.String,
    "layer": pl.Int64,
    "n_positions": pl.Int64,
    "n_completions": pl.Int64,
    "norm": pl.Float64,
    "mean": pl.List(pl.Float32),
}


@dataclass(frozen=True)
class Span:
    """A teacher-forced sequence and the half-open range ``[start, end)`` of its decode positions."""

    ids: tuple[int, ...]
    start: int
    end: int


def decode_span(prompt_ids: Sequence[int], completion_ids: Sequence[int], finish_reason: str) -> Span:
    """The sequence the engine fed for one completion and its decode positions (module docstring)."""
    fed = len(completion_ids) - (finish_reason == "length")
    ids = (*(int(i) for i in prompt_ids), *(int(i) for i in completion_ids[: max(fed, 0)]))
    return Span(ids, len(prompt_ids), len(ids))


def spans_of(completions: pl.DataFrame, prompts: pl.DataFrame, tokenizer, add_bos: bool) -> list[Span]:
    """``decode_span`` of every completion (``completion_token_ids``, ``finish_reason``, ``variant``,
    ``example_id``) with its prompt's ids as the engine fed them (``generation.encode_prompt``)."""
    from bt_assets.lib.generation import encode_prompt

    text = {(r["variant"], r["example_id"]): r["prompt"] for r in prompts.iter_rows(named=True)}
    return [
        decode_span(
            encode_prompt(tokenizer, text[(r["variant"], r["example_id"])], add_bos),
            r["completion_token_ids"],
            r["finish_reason"],
        )
        for r in completions.iter_rows(named=True)
    ]


def sample_rows(rows: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    """A seeded sample of at most ``n`` completions (sorted by example and sample: stable output)."""
    if rows.height <= n:
        return rows.sort("example_id", "sample_id")
    keep = sorted(random.Random(seed).sample(range(rows.height), n))
    return rows[keep].sort("example_id", "sample_id")


@torch.inference_mode()
def component_means(
    model: torch.nn.Module, spans: Sequence[Span], batch_size: int = 4
) -> tuple[torch.Tensor, int]:
    """((L, 2, d) float32 means of every (layer, component) output over the spans' decode positions,
    the number of positions). Spans are right-padded in batches: no real position sees a pad."""
    n_layers, d = len(decoder_layers(model)), model.config.hidden_size
    dev = next(model.parameters()).device
    sums = torch.zeros(n_layers, len(COMPONENTS), d, dtype=torch.float64)
    total = 0
    live: dict[str, torch.Tensor] = {}

    def grab(layer: int, ci: int):
        def hook(_m, _i, out):
            x = out[0] if isinstance(out, tuple) else out  # (B, T, d)
            sums[layer, ci] += x[live["mask"]].double().sum(0).cpu()  # decode positions only

        return hook

    handles = [
        component_module(model, layer, comp).register_forward_hook(grab(layer, ci))
        for layer in range(n_layers)
        for ci, comp in enumerate(COMPONENTS)
    ]
    try:
        todo = [s for s in spans if s.end > s.start]
        for b in range(0, len(todo), batch_size):
            chunk = todo[b : b + batch_size]
            width = max(len(s.ids) for s in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            attend, mask = torch.zeros_like(ids), torch.zeros(len(chunk), width, dtype=torch.bool)
            for i, s in enumerate(chunk):
                ids[i, : len(s.ids)] = torch.tensor(s.ids)
                attend[i, : len(s.ids)] = 1
                mask[i, s.start : s.end] = True
            live["mask"] = mask.to(dev)
            model(ids.to(dev), attention_mask=attend.to(dev), logits_to_keep=1)
            total += int(mask.sum())
    finally:
        for h in handles:
            h.remove()
    return (sums / max(total, 1)).float(), total


def means_frame(means: torch.Tensor, n_positions: int, n_completions: int) -> pl.DataFrame:
    """One row per (component, layer): the mean vector, its norm and the counts (``MEANS_SCHEMA``);
    ``interventions.intervention_cells`` reads it back."""
    rows = [
        {
            "component": comp,
            "layer": layer,
            "n_positions": n_positions,
            "n_completions": n_completions,
            "norm": float(means[layer, ci].norm()),
            "mean": means[layer, ci].tolist(),
        }
        for ci, comp in enumerate(COMPONENTS)
        for layer in range(means.shape[0])
    ]
    return pl.DataFrame(rows, schema=MEANS_SCHEMA)
