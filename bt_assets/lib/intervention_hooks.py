"""Decode-time interventions beyond component scaling: per-condition tables and the hooks that read them.

Four kinds, each a table with one row per condition (the engine's per-row condition index picks a row
for each batch row, exactly as for the scale table of ``bt_assets.lib.hooks``):

- ``head_scales`` (C, L, H): each attention head's slice of ``self_attn.o_proj``'s INPUT (the head's
  context vector, before the output projection mixes heads) is multiplied by its factor; 1.0 = untouched.
- ``mean_weights`` (C, L, 2) with ``means`` (L, 2, d): mean ablation of a component's write into the
  residual stream, ``out <- out + w (mean - out)`` (``torch.lerp``): w = 1 replaces the output by its mean
  over baseline decode positions, w = 0 leaves it untouched.
- ``steer`` (C, L, d): a vector added to the residual stream at the output of decoder layer l (before
  layer l + 1 reads it); 0 = untouched.
- ``logit_ids`` (K,) with ``logit_offsets`` (C, K): added to those token ids' logits at the unembedding
  (``model.get_output_embeddings()``); 0 = untouched, -inf = the token can never be sampled.

Like the scale hooks they obey the explicit phase: with ``decode_only`` nothing is applied in the
prefill (so the first generated token, sampled from the shared prefill, is intervened on only by a
logit offset: the engine applies ``first_token_logits`` to its per-row first-token logits). Exact no-ops: a
(condition, layer) whose row is the identity registers no hook when no condition needs one, and a
hooked row at its identity value is returned bit for bit (rows are selected with ``torch.where`` or
multiplied by exactly 1.0). Hook calls are counted in the ``HookState`` counters under the component
names ``heads``, ``attn_mean``, ``mlp_mean``, ``resid`` and ``logits`` (layer = the model's layer count).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from bt_assets.lib.hooks import COMPONENTS, HookState, component_module, decoder_layers


@dataclass(frozen=True, eq=False)
class InterventionTables:
    """The per-condition tables of the intervention hooks (module docstring); None = no condition uses
    that kind. Build them with ``interventions.intervention_tables``; assign to ``HookState.tables``."""

    head_scales: torch.Tensor | None = None  # (C, L, H) float32, 1 = untouched
    mean_weights: torch.Tensor | None = None  # (C, L, 2) float32, 0 = untouched
    means: torch.Tensor | None = None  # (L, 2, d) float32 mean output per (layer, component)
    steer: torch.Tensor | None = None  # (C, L, d) float32 added to the residual after layer l
    logit_ids: torch.Tensor | None = None  # (K,) int64 token ids
    logit_offsets: torch.Tensor | None = None  # (C, K) float32 added to their logits, -inf = banned

    @cached_property
    def active(self) -> dict[str, torch.Tensor]:
        """Host (C, L) bool per hook name (``logits``: (C, 1)): which condition changes that layer."""
        out: dict[str, torch.Tensor] = {}
        if self.head_scales is not None:
            out["heads"] = (self.head_scales != 1.0).any(-1).cpu()
        if self.mean_weights is not None:
            for ci, comp in enumerate(COMPONENTS):
                out[f"{comp}_mean"] = (self.mean_weights[..., ci] != 0.0).cpu()
        if self.steer is not None:
            out["resid"] = (self.steer != 0.0).any(-1).cpu()
        if self.logit_offsets is not None:
            out["logits"] = (self.logit_offsets != 0.0).any(-1, keepdim=True).cpu()
        return out

    def check(self, model: nn.Module, n_conditions: int) -> None:
        """Raise ValueError when a table does not fit the model or the number of conditions."""
        n_layers = len(decoder_layers(model))
        attn = decoder_layers(model)[0].self_attn
        n_heads = model.config.num_attention_heads
        d, vocab = model.config.hidden_size, model.get_output_embeddings().weight.shape[0]
        want = {
            "head_scales": (n_conditions, n_layers, n_heads),
            "mean_weights": (n_conditions, n_layers, len(COMPONENTS)),
            "means": (n_layers, len(COMPONENTS), d),
            "steer": (n_conditions, n_layers, d),
            "logit_offsets": (n_conditions, None),
        }
        for name, shape in want.items():
            t = getattr(self, name)
            if t is not None and any(w is not None and w != s for w, s in zip(shape, t.shape, strict=True)):
                raise ValueError(f"intervention table {name} {tuple(t.shape)} does not fit {shape}")
        if attn.o_proj.in_features % n_heads:
            raise ValueError(f"o_proj input {attn.o_proj.in_features} is not {n_heads} heads wide")
        if (self.mean_weights is None) != (self.means is None):
            raise ValueError("mean_weights and means come together")
        if (self.logit_ids is None) != (self.logit_offsets is None):
            raise ValueError("logit_ids and logit_offsets come together")
        if self.logit_ids is not None:
            if self.logit_ids.shape != self.logit_offsets.shape[1:]:
                raise ValueError(f"logit_ids {tuple(self.logit_ids.shape)} vs offsets")
            if (
                self.logit_ids.numel()
                and not 0 <= int(self.logit_ids.min()) <= int(self.logit_ids.max()) < vocab
            ):
                raise ValueError(f"logit_ids outside a {vocab}-token vocabulary")


def _applies(state: HookState, name: str, layer: int, active: torch.Tensor) -> bool:
    """Count one hook call (per condition of the batch, as the scale hooks do); True if some row of the
    batch has a non-identity entry and the phase allows applying it."""
    skip = state.decode_only and state.phase == "prefill"
    conds, _ = state.present()
    state.counts[(state.phase, name, layer)] += 1
    hit = False
    for cond in conds:
        state.cell_counts[(cond, state.phase, name, layer, "calls")] += 1
        if not skip and bool(active[cond]):
            state.cell_counts[(cond, state.phase, name, layer, "applied")] += 1
            hit = True
    if hit:
        state.applied[(state.phase, name, layer)] += 1
    return hit


def _rows(state: HookState, name: str, table: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``table[row_condition]`` on ``like``'s device/dtype, memoised on the identity of both tensors."""
    key = ("tables", name)
    hit = state._cache.get(key)
    if (
        hit is None
        or hit[0] is not state.row_condition
        or hit[1] is not table
        or hit[2] != (like.device, like.dtype)
    ):
        rows = table.to(like.device, like.dtype)[state.row_condition.to(like.device)]
        hit = (state.row_condition, table, (like.device, like.dtype), rows)
        state._cache[key] = hit
    return hit[3]


def _at_positions(x: torch.Tensor, new: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """``new`` (B, T, d) where it applies: every position, or one position per row (the rest is ``x``)."""
    if positions is None:
        return new
    rows = torch.arange(x.shape[0], device=x.device)
    pos = positions.to(x.device) % x.shape[1]
    y = x.clone()
    y[rows, pos] = new[rows, pos]
    return y


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace_first(output: Any, y: torch.Tensor) -> Any:
    return (y, *output[1:]) if isinstance(output, tuple) else y


def _heads_hook(state: HookState, layer: int, active: torch.Tensor, n_heads: int) -> Callable[..., Any]:
    def hook(_module: nn.Module, args: tuple) -> Any:
        if not _applies(state, "heads", layer, active):
            return None  # the very same input
        x = args[0]  # (B, T, H * head_dim)
        s = _rows(state, "heads", state.tables.head_scales, x)[:, layer]  # (B, H)
        b, t, width = x.shape
        scaled = (x.reshape(b, t, n_heads, width // n_heads) * s.view(b, 1, n_heads, 1)).reshape(b, t, width)
        return (_at_positions(x, scaled, state.positions), *args[1:])

    return hook


def _mean_hook(state: HookState, layer: int, comp: str, active: torch.Tensor) -> Callable[..., Any]:
    ci = COMPONENTS.index(comp)

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        if not _applies(state, f"{comp}_mean", layer, active):
            return output
        x = _first(output)  # (B, T, d)
        w = _rows(state, "mean_weights", state.tables.mean_weights, x)[:, layer, ci].view(-1, 1, 1)
        mean = state.tables.means[layer, ci].to(x.device, x.dtype)
        y = torch.where(w != 0, torch.lerp(x, mean.expand_as(x), w), x)
        return _replace_first(output, _at_positions(x, y, state.positions))

    return hook


def _steer_hook(state: HookState, layer: int, active: torch.Tensor) -> Callable[..., Any]:
    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        if not _applies(state, "resid", layer, active):
            return output
        x = _first(output)  # (B, T, d) the residual stream after this layer
        v = _rows(state, "steer", state.tables.steer, x)[:, layer].unsqueeze(1)  # (B, 1, d)
        y = torch.where((v != 0).any(-1, keepdim=True), x + v, x)
        return _replace_first(output, _at_positions(x, y, state.positions))

    return hook


def _logits_hook(state: HookState, n_layers: int, active: torch.Tensor) -> Callable[..., Any]:
    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> Any:
        if not _applies(state, "logits", n_layers, active):
            return output
        return offset_logits(state, output)

    return hook


def offset_logits(state: HookState, logits: torch.Tensor) -> torch.Tensor:
    """(B, ..., V) logits of the batch rows with each row's condition's offsets added to ``logit_ids``
    (a copy; rows whose offsets are 0 keep their values exactly)."""
    t = state.tables
    ids = t.logit_ids.to(logits.device)
    off = _rows(state, "logit_offsets", t.logit_offsets, logits)  # (B, K)
    off = off.view(off.shape[0], *([1] * (logits.dim() - 2)), off.shape[1])
    y = logits.clone()
    y[..., ids] = logits[..., ids] + off
    return y


def first_token_logits(state: HookState, logits: torch.Tensor) -> torch.Tensor:
    """The logit offsets of each row's condition applied to the first-token logits (n, V) that the
    engine takes from the shared prefill (``decode_batch``'s ``out.logits[:, -1][src]``), for the rows of
    ``state.row_condition``. Hooks cannot do this: the prefill forward has one row per distinct prompt,
    not per condition. The static (``engine.decode_batch``) and continuous (``scheduler``) paths both call
    it, so a token ban holds from the first generated token; the other kinds start at the second (the
    first token's logits come from the prompt's prefill, which no decode-only hook changes)."""
    t = state.tables
    if t is None or t.logit_offsets is None or not bool(t.active["logits"].any()):
        return logits
    return offset_logits(state, logits)


def register_hooks(model: nn.Module, state: HookState) -> list[RemovableHandle]:
    """Register the hooks ``state.tables`` needs (none for an all-identity table); the caller removes
    them (``hooks.ablation_hooks`` does, in ``finally``)."""
    t = state.tables
    if t is None:
        return []
    t.check(model, state.scales.shape[0])
    layers, act = decoder_layers(model), t.active
    n_heads = model.config.num_attention_heads
    handles: list[RemovableHandle] = []
    for layer, block in enumerate(layers):
        if "heads" in act and act["heads"][:, layer].any():
            hook = _heads_hook(state, layer, act["heads"][:, layer], n_heads)
            handles.append(block.self_attn.o_proj.register_forward_pre_hook(hook))
        for comp in COMPONENTS:
            name = f"{comp}_mean"
            if name in act and act[name][:, layer].any():
                hook = _mean_hook(state, layer, comp, act[name][:, layer])
                handles.append(component_module(model, layer, comp).register_forward_hook(hook))
        if "resid" in act and act["resid"][:, layer].any():
            handles.append(block.register_forward_hook(_steer_hook(state, layer, act["resid"][:, layer])))
    if "logits" in act and act["logits"].any():
        hook = _logits_hook(state, len(layers), act["logits"][:, 0])
        handles.append(model.get_output_embeddings().register_forward_hook(hook))
    return handles
