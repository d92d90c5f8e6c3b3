"""Teacher-forced measurements at the backtracking onset: logit lens, ablation scan, continuation.

Every event is a token sequence (the stored prompt + completion ids the model saw, or prompt +
completion re-tokenised where a table has no stored ids) with a prediction
position ``pred_pos`` whose logits predict the onset token ``target`` (e.g. " Wait"). Ablating a
component at ``pred_pos`` cannot change anything before it (causal attention), so the scan and the
continuation run the prefix ``[0, pred_pos)`` ONCE, copy its KV cache to R rows, and score one
position for all R variants at once (row r carries its own scale table row). The result equals one
full-sequence forward per variant (see ``scan_bruteforce`` and its test).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import polars as pl
import torch

from bt_assets.lib.engine import slab_cache
from bt_assets.lib.hooks import COMPONENTS, HookState, ablation_hooks, decoder_layers
from bt_assets.lib.stats import clustered_mean_interval, problem_of
from bt_assets.lib.token_family import onset_family, token_family


@dataclass(frozen=True)
class Event:
    """One teacher-forced probe: ``ids[pred_pos]`` is fed, ``target`` is the token it should predict."""

    key: str
    ids: tuple[int, ...]
    pred_pos: int
    target: int


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def logit_lens(model: torch.nn.Module, events: Sequence[Event], batch_size: int = 8) -> torch.Tensor:
    """Per event and layer l: the target token's (logit, log-prob) read from the residual stream after
    layer l through the final norm and the unembedding. Returns (E, L, 2) float32.

    HF's last hidden state is already normalised, so it goes straight to the unembedding (B9 fixed).
    """
    n_layers = len(decoder_layers(model))
    norm, head = model.model.norm, model.get_output_embeddings()
    out = torch.empty(len(events), n_layers, 2)
    dev = _device(model)
    for start in range(0, len(events), batch_size):
        chunk = events[start : start + batch_size]
        width = max(e.pred_pos + 1 for e in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(chunk):  # right padding: positions <= pred_pos never see the pads
            ids[i, : e.pred_pos + 1] = torch.tensor(e.ids[: e.pred_pos + 1])
            mask[i, : e.pred_pos + 1] = 1
        hs = model(ids.to(dev), attention_mask=mask.to(dev), output_hidden_states=True).hidden_states
        rows = torch.arange(len(chunk), device=dev)
        pos = torch.tensor([e.pred_pos for e in chunk], device=dev)
        tgt = torch.tensor([e.target for e in chunk], device=dev)
        for layer in range(n_layers):
            h = hs[layer + 1][rows, pos]  # (B, d)
            if layer < n_layers - 1:
                h = norm(h)
            logits = head(h).float()
            out[start : start + len(chunk), layer, 0] = logits[rows, tgt].cpu()
            out[start : start + len(chunk), layer, 1] = torch.log_softmax(logits, -1)[rows, tgt].cpu()
    return out


def single_component_table(
    n_layers: int, components: Sequence[str], layers: Sequence[int], scale: float
) -> tuple[torch.Tensor, list[tuple[str, int]]]:
    """Scale table (1 + V, L, 2): row 0 clean, row v one (component, layer) scaled; and the variant list."""
    variants = [(c, layer) for layer in layers for c in components]
    table = torch.ones(1 + len(variants), n_layers, len(COMPONENTS))
    for v, (c, layer) in enumerate(variants, start=1):
        table[v, layer, COMPONENTS.index(c)] = scale
    return table, variants


@torch.inference_mode()
def score_at_onset(
    model: torch.nn.Module, event: Event, table: torch.Tensor, state: HookState | None = None
) -> torch.Tensor:
    """Logits at ``pred_pos`` for every row of ``table`` (R, L, 2), ablating at ``pred_pos`` only.

    One prefix forward over ``ids[:pred_pos]`` (no hooks active: nothing before pred_pos is ablated),
    then one step with R rows sharing that KV cache. Returns (R, V) float32 logits.
    """
    dev = _device(model)
    rows = table.shape[0]
    state = state or HookState(
        scales=table.to(dev),
        row_condition=torch.arange(rows, device=dev),
        phase="teacher",
        decode_only=False,
        positions=None,
    )
    state.scales, state.row_condition = table.to(dev), torch.arange(rows, device=dev)
    state.phase, state.decode_only, state.positions = "teacher", False, None
    ids = torch.tensor(event.ids[: event.pred_pos + 1], device=dev).unsqueeze(0)
    cache = None
    if event.pred_pos > 0:  # the prefix once (no logits needed), its K/V copied to the R rows of a slab
        cache = slab_cache(len(decoder_layers(model)), event.pred_pos + 1)
        model(ids[:, :-1], past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache.batch_select_indices(torch.zeros(rows, dtype=torch.long, device=dev))
    last = ids[:, -1:].expand(rows, 1)
    pos = torch.full((rows, 1), event.pred_pos, device=dev)
    with ablation_hooks(model, state):
        logits = model(last, past_key_values=cache, position_ids=pos, use_cache=cache is not None).logits
    return logits[:, -1].float()


@torch.inference_mode()
def scan_bruteforce(model: torch.nn.Module, event: Event, table: torch.Tensor) -> torch.Tensor:
    """Reference for ``score_at_onset``: one full forward over ``ids[:pred_pos+1]`` per table row (the
    original's method; only the last position's logits are computed, which changes nothing)."""
    dev = _device(model)
    ids = torch.tensor(event.ids[: event.pred_pos + 1], device=dev).unsqueeze(0)
    out = []
    for r in range(table.shape[0]):
        state = HookState(
            scales=table[r : r + 1].to(dev),
            row_condition=torch.zeros(1, dtype=torch.long, device=dev),
            phase="teacher",
            decode_only=False,
            positions=torch.tensor([event.pred_pos], device=dev),
        )
        with ablation_hooks(model, state):
            out.append(model(ids, logits_to_keep=1).logits[0, -1].float())
    return torch.stack(out)


def target_stats(logits: torch.Tensor, target: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logit, log-prob, prob) of ``target`` for every row of (R, V) logits."""
    logp = torch.log_softmax(logits, -1)[:, target]
    return logits[:, target], logp, logp.exp()


def onset_deltas(
    events: Sequence[Event], n_variants: int, score: Callable[[Event], torch.Tensor]
) -> list[dict]:
    """Per variant v < ``n_variants`` (row v + 1 of ``score(event)``'s (1 + V, vocab) logits; row 0 is
    clean; the scan's and the head scan's shared step, NaN means without events): the change
    of the onset token's logit and log-prob, mean over ``events`` with std and a problem-clustered 95%
    t-interval (events of one problem are not independent): ``n_events``, ``delta_logit_mean``,
    ``delta_logit_std``, ``delta_logit_mean_lo/_hi`` and the same for ``delta_logprob``."""
    deltas = torch.empty(len(events), n_variants, 2)
    for i, ev in enumerate(events):
        logit, logp, _ = target_stats(score(ev), ev.target)
        deltas[i, :, 0] = (logit[1:] - logit[0]).cpu()
        deltas[i, :, 1] = (logp[1:] - logp[0]).cpu()
    problems = [problem_of(ev.key) for ev in events]
    out = []
    for v in range(deltas.shape[1]):
        row: dict = {"n_events": len(events)}
        for j, name in enumerate(("delta_logit", "delta_logprob")):
            mean, std, lo, hi = clustered_mean_interval(deltas[:, v, j].tolist(), problems)
            row |= {f"{name}_mean": mean, f"{name}_std": std, f"{name}_mean_lo": lo, f"{name}_mean_hi": hi}
        out.append(row)
    return out


def encode_full(tokenizer, prompt: str, completion: str, add_bos: bool) -> tuple[int, ...]:
    """Token ids of prompt + completion as re-tokenised for detection (positions index into these)."""
    return tuple(tokenizer(prompt + completion, add_special_tokens=add_bos)["input_ids"])


def stored_onset_index(tokenizer, ids: Sequence[int], text: str, char: int) -> int:
    """Index in the sampled completion ``ids`` of the first token whose decoded prefix covers character
    ``char`` of ``text`` (= ``decode(ids, skip_special_tokens=True)``, as the generation store wrote it):
    the smallest k with ``decode(ids[:k+1])`` longer than ``char`` (binary search on the prefix lengths),
    moved on while that prefix does not agree with ``text`` up to ``char`` (a split multi-byte character
    decodes to a replacement character). -1 when ``char`` is outside the text or no prefix covers it."""
    if not 0 <= char < len(text):
        return -1

    def prefix(k: int) -> str:
        return tokenizer.decode(list(ids[:k]), skip_special_tokens=True)

    lo, hi = 1, len(ids)
    while lo < hi:  # smallest k with len(prefix(k)) > char
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if len(prefix(mid)) > char else (mid + 1, hi)
    for k in range(lo, len(ids) + 1):
        if prefix(k)[: char + 1] == text[: char + 1]:
            return k - 1
    return -1


CONTINUATION_SCHEMA = {
    "event": pl.String,
    "subset": pl.String,
    "scale": pl.Float64,
    "condition": pl.String,
    "onset_token_id": pl.Int64,
    "onset_token_text": pl.String,
    "onset_logit": pl.Float64,
    "onset_logprob": pl.Float64,
    "onset_prob": pl.Float64,
    "top_tokens": pl.String,
    "top1_text": pl.String,
    "top1_is_onset": pl.Boolean,
    "top1_is_synonym": pl.Boolean,
    "onset_family_size": pl.Int64,
    "onset_family_prob": pl.Float64,
    "synonym_family_prob": pl.Float64,
    "onset_family_prob_drop": pl.Float64,
    "onset_logit_drop": pl.Float64,
}


def empty_continuation() -> pl.DataFrame:
    return pl.DataFrame(schema=CONTINUATION_SCHEMA)


def continuation_rows(
    model: torch.nn.Module,
    tokenizer,
    events: Sequence[Event],
    table: torch.Tensor,
    scales: Sequence[float],
    top_k: int,
    synonyms: Sequence[str],
    subset: str,
) -> list[dict]:
    """One row per (event, scale) at the prediction position with the subset scaled there only (row 0
    of ``table`` = clean, scale 1.0): the onset token's logit, log-prob and probability; the onset
    scored as a token FAMILY (``token_family.onset_family``: the trigger word in every casing, with or
    without a leading space) and the synonym family (the first words of ``synonyms``, minus the onset
    family); the paired clean-minus-this-row drops of the family probability and the onset logit (0 on
    the clean row); the top tokens, and whether the top-1 token is in the onset or the synonym family."""
    syn_all = token_family(tokenizer, synonyms)
    rows = []
    for ev in events:
        logits = score_at_onset(model, ev, table)
        logit, logp, prob = target_stats(logits, ev.target)
        probs = torch.softmax(logits, -1)
        family = onset_family(tokenizer, ev.target)
        syn = sorted(syn_all - family)
        fam_p = probs[:, sorted(family)].sum(-1)
        syn_p = probs[:, syn].sum(-1) if syn else torch.zeros(len(scales))
        top = torch.topk(logits, top_k, dim=-1).indices.cpu()
        onset_text = tokenizer.decode([ev.target])
        for r, scale in enumerate(scales):
            texts = [tokenizer.decode([int(t)]) for t in top[r]]
            rows.append(
                {
                    "event": ev.key,
                    "subset": subset,
                    "scale": float(scale),
                    "condition": "clean" if r == 0 else "ablated",
                    "onset_token_id": ev.target,
                    "onset_token_text": onset_text,
                    "onset_logit": float(logit[r]),
                    "onset_logprob": float(logp[r]),
                    "onset_prob": float(prob[r]),
                    "top_tokens": "|".join(texts),
                    "top1_text": texts[0],
                    "top1_is_onset": int(top[r, 0]) in family,
                    "top1_is_synonym": int(top[r, 0]) in syn,
                    "onset_family_size": len(family),
                    "onset_family_prob": float(fam_p[r]),
                    "synonym_family_prob": float(syn_p[r]),
                    "onset_family_prob_drop": float(fam_p[0] - fam_p[r]),
                    "onset_logit_drop": float(logit[0] - logit[r]),
                }
            )
    return rows
