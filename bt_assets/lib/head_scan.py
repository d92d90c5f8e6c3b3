"""The teacher-forced ablation scan at the backtracking onset, per attention head, and the head selection.

The layer scan (``teacher.score_at_onset``) extended to single heads: for every event, the prefix
``ids[:pred_pos]`` runs ONCE, its KV cache is copied to R = 1 + (layers x heads) rows, and one step at
``pred_pos`` scores every variant at once: row 0 clean, row v one head's context vector (its slice of
``self_attn.o_proj``'s input, ``intervention_hooks``) multiplied by ``scale`` at ``pred_pos`` only.
Nothing before ``pred_pos`` can change (causal attention), so this equals one full forward per variant
(``scan_heads_bruteforce``, the reference in the tests). The statistic is the change in the onset
token's logit (or log-prob) vs the clean row, mean over events with a problem-clustered 95% t-interval
(``stats.clustered_mean_interval``; the denominator is the events, clustered by their problem).
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
import torch

from bt_assets.lib import teacher
from bt_assets.lib.hooks import COMPONENTS, HookState, ablation_hooks, decoder_layers
from bt_assets.lib.intervention_hooks import InterventionTables
from bt_assets.lib.teacher import Event


def head_table(
    n_layers: int, n_heads: int, layers: Sequence[int], scale: float
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Head-scale table (1 + V, L, H): row 0 clean, row v one (layer, head) scaled; and the variants."""
    variants = [(layer, head) for layer in layers for head in range(n_heads)]
    table = torch.ones(1 + len(variants), n_layers, n_heads)
    for v, (layer, head) in enumerate(variants, start=1):
        table[v, layer, head] = scale
    return table, variants


def _ones(rows: int, n_layers: int) -> torch.Tensor:
    return torch.ones(rows, n_layers, len(COMPONENTS))


def score_heads_at_onset(model: torch.nn.Module, event: Event, heads: torch.Tensor) -> torch.Tensor:
    """(R, V) float32 logits at ``pred_pos`` for every row of the head table ``heads`` (R, L, H), the
    heads scaled at ``pred_pos`` only; one shared prefix (``teacher.score_at_onset``)."""
    n_layers, dev = len(decoder_layers(model)), next(model.parameters()).device
    state = HookState(
        scales=_ones(heads.shape[0], n_layers),
        row_condition=torch.arange(heads.shape[0]),
        tables=InterventionTables(head_scales=heads.to(dev)),
    )
    return teacher.score_at_onset(model, event, _ones(heads.shape[0], n_layers), state)


@torch.inference_mode()
def scan_heads_bruteforce(model: torch.nn.Module, event: Event, heads: torch.Tensor) -> torch.Tensor:
    """Reference for ``score_heads_at_onset``: one full forward over ``ids[:pred_pos+1]`` per row, the
    heads scaled at ``pred_pos`` only (the position hook), nothing shared."""
    n_layers, dev = len(decoder_layers(model)), next(model.parameters()).device
    ids = torch.tensor(event.ids[: event.pred_pos + 1], device=dev).unsqueeze(0)
    out = []
    for r in range(heads.shape[0]):
        state = HookState(
            scales=_ones(1, n_layers),
            row_condition=torch.zeros(1, dtype=torch.long, device=dev),
            phase="teacher",
            decode_only=False,
            positions=torch.tensor([event.pred_pos], device=dev),
            tables=InterventionTables(head_scales=heads[r : r + 1].to(dev)),
        )
        with ablation_hooks(model, state):
            out.append(model(ids, logits_to_keep=1).logits[0, -1].float())
    return torch.stack(out)


def head_scan_table(
    model: torch.nn.Module, events: Sequence[Event], layers: Sequence[int] | None, scale: float
) -> pl.DataFrame:
    """Per (layer, head): the change in the onset token's logit and log-prob when that head's context
    vector is multiplied by ``scale`` at the prediction position only, mean over ``events`` with std and
    problem-clustered 95% t-interval; sorted by the mean logit change, most negative first."""
    n_layers, n_heads = len(decoder_layers(model)), model.config.num_attention_heads
    table, variants = head_table(n_layers, n_heads, range(n_layers) if layers is None else layers, scale)
    stats = teacher.onset_deltas(events, len(variants), lambda ev: score_heads_at_onset(model, ev, table))
    rows = [
        {"layer": layer, "head": head, **st, "scale": scale}
        for (layer, head), st in zip(variants, stats, strict=True)
    ]
    return pl.DataFrame(rows).sort("delta_logit_mean", "layer", "head", nulls_last=True)


def select_heads(
    scan: pl.DataFrame, k: int | None, statistic: str = "delta_logit", require_negative: bool = False
) -> list[tuple[int, int]]:
    """The top ``k`` (all: None) heads by the mean of ``statistic``, most negative first (ablating them
    lowers the onset token most; ties by layer, head), as ``selection.select_layers`` does for layers;
    optionally only heads whose mean effect is negative."""
    col = f"{statistic}_mean"
    rows = scan.filter(pl.col(col).is_not_nan()).sort(col, "layer", "head")
    if require_negative:
        rows = rows.filter(pl.col(col) < 0)
    rows = rows if k is None else rows.head(k)
    return [(int(a), int(b)) for a, b in zip(rows["layer"], rows["head"], strict=True)]
