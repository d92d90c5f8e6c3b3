"""Ablation hooks: scale a component's write into the residual stream, per (layer, component) and per row.

The components are ``self_attn`` ("attn": the o_proj output, element 0 of the module's tuple) and ``mlp``
("mlp": the down_proj output) of each decoder block; the residual stream itself is never touched.
A scale table ``scales[C, L, 2]`` (1.0 = untouched) holds one row per condition and ``row_condition[B]``
maps batch rows to conditions, so one batch carries several conditions. The caller (the decoding loop)
sets an explicit ``phase``; with ``decode_only`` the hooks leave the prefill alone, so the prompt's K/V
stay intact, instead of guessing the phase from the sequence length as the original did.
Multiplying by exactly 1.0 is exact, so unscaled rows stay bit-identical to an unhooked forward.
The other intervention kinds (head scaling, mean ablation, steering, logit offsets) are per-condition
tables in ``HookState.tables``, hooked by ``bt_assets.lib.intervention_hooks`` under the same rules.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

if TYPE_CHECKING:
    from bt_assets.lib.intervention_hooks import InterventionTables

COMPONENTS = ("attn", "mlp")
Phase = Literal["prefill", "decode", "teacher"]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a Qwen2/Llama-style causal LM (``model.model.layers``)."""
    return model.model.layers


def component_module(model: nn.Module, layer: int, comp: str) -> nn.Module:
    """The module whose output is the component's write into the residual stream."""
    if comp not in COMPONENTS:
        raise ValueError(f"unknown component {comp!r} (expected one of {COMPONENTS})")
    block = decoder_layers(model)[layer]
    return block.self_attn if comp == "attn" else block.mlp


def scale_table(conditions: Sequence[Mapping[tuple[str, int], float]], n_layers: int) -> torch.Tensor:
    """(C, n_layers, 2) float32 table from per-condition {(component, layer): scale}; 1.0 elsewhere."""
    table = torch.ones(max(len(conditions), 1), n_layers, len(COMPONENTS))
    for c, spec in enumerate(conditions):
        for (comp, layer), scale in spec.items():
            if comp not in COMPONENTS:
                raise ValueError(f"condition {c}: unknown component {comp!r} (expected one of {COMPONENTS})")
            if not 0 <= int(layer) < n_layers:
                raise ValueError(f"condition {c}: layer {layer} out of range for a {n_layers}-layer model")
            table[c, int(layer), COMPONENTS.index(comp)] = float(scale)
    return table


@dataclass
class HookState:
    """What the hooks read at call time, and what they count over a whole run (never reset implicitly).

    ``scales`` (C, L, 2); ``row_condition`` (B,) row -> condition; ``positions`` (B,) the position on the
    current forward's sequence axis to scale in each row (negative counts from the end; None = all).
    Assign new tensors rather than editing them in place: per-batch host copies are cached by identity.
    ``counts`` / ``applied`` are keyed (phase, component, layer): hook calls, and calls that scaled some
    row by a value != 1. ``cell_counts`` is keyed (condition, phase, component, layer, "calls"|"applied")
    for the conditions present in the batch. ``tables``: the other intervention kinds' per-condition
    tables (``intervention_hooks.InterventionTables``, same condition axis as ``scales``); None = none.
    """

    scales: torch.Tensor
    row_condition: torch.Tensor
    phase: Phase = "prefill"
    decode_only: bool = True
    positions: torch.Tensor | None = None
    tables: InterventionTables | None = None
    counts: Counter = field(default_factory=Counter)
    applied: Counter = field(default_factory=Counter)
    cell_counts: Counter = field(default_factory=Counter)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def empty(cls) -> HookState:
        """A state to pass as ``hook_state_out``: the engine fills in scales and rows."""
        return cls(scales=torch.ones(1, 1, len(COMPONENTS)), row_condition=torch.zeros(1, dtype=torch.long))

    def count_table(self) -> list[dict]:
        """One row per (phase, component, layer): calls and applied."""
        return [
            {"phase": p, "component": c, "layer": layer, "calls": n, "applied": self.applied[(p, c, layer)]}
            for (p, c, layer), n in sorted(self.counts.items())
        ]

    def cell_table(self) -> list[dict]:
        """One row per (condition, phase, component, layer): calls and applied."""
        keys = sorted({k[:4] for k in self.cell_counts})
        return [
            {
                "condition": k[0],
                "phase": k[1],
                "component": k[2],
                "layer": k[3],
                "calls": self.cell_counts[(*k, "calls")],
                "applied": self.cell_counts[(*k, "applied")],
            }
            for k in keys
        ]

    def present(self) -> tuple[list[int], torch.Tensor]:
        """Conditions in the current batch and a host copy of ``scales`` (one sync per new batch)."""
        return self._cached(
            "present",
            (),
            lambda: (sorted(set(self.row_condition.tolist())), self.scales.detach().float().cpu()),
        )

    def row_scales(self, layer: int, ci: int, like: torch.Tensor) -> torch.Tensor:
        """(B,) scale of each row for one (layer, component), on ``like``'s device and dtype."""

        def gather() -> torch.Tensor:  # (B, L, 2)
            return self.scales.to(like.device, like.dtype)[self.row_condition.to(like.device)]

        rows = self._cached("rows", (like.device, like.dtype), gather)
        return rows[:, layer, ci]

    def _cached(self, name: str, key: tuple, make: Callable[[], Any]) -> Any:
        """Memoise ``make()`` on the identity of the current scales and row_condition (both held)."""
        full = (id(self.scales), id(self.row_condition), *key)
        hit = self._cache.get(name)
        if hit is None or hit[0] != full:
            hit = (full, make(), self.scales, self.row_condition)
            self._cache[name] = hit
        return hit[1]


def _count(state: HookState, phase: str, comp: str, layer: int, ci: int, skip: bool) -> bool:
    """Record one call; True if some row of the batch gets a scale != 1."""
    conds, host = state.present()
    state.counts[(phase, comp, layer)] += 1
    hit = False
    for cond in conds:
        state.cell_counts[(cond, phase, comp, layer, "calls")] += 1
        if not skip and float(host[cond, layer, ci]) != 1.0:
            state.cell_counts[(cond, phase, comp, layer, "applied")] += 1
            hit = True
    if hit:
        state.applied[(phase, comp, layer)] += 1
    return hit


def _scale(x: torch.Tensor, s: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """x (B, T, d) times s (B,) at every position, or only at one position per row."""
    if positions is None:
        return x * s.view(-1, 1, 1)
    rows = torch.arange(x.shape[0], device=x.device)
    pos = positions.to(x.device) % x.shape[1]
    y = x.clone()
    y[rows, pos] = x[rows, pos] * s.view(-1, 1)
    return y


def _hook(state: HookState, layer: int, comp: str) -> Callable[..., Any]:
    ci = COMPONENTS.index(comp)

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        skip = state.decode_only and state.phase == "prefill"
        if not _count(state, state.phase, comp, layer, ci, skip):
            return output  # nothing to scale in this batch: return the very same tensor
        x = output[0] if isinstance(output, tuple) else output  # (B, T, d)
        y = _scale(x, state.row_scales(layer, ci, x), state.positions)
        return (y, *output[1:]) if isinstance(output, tuple) else y

    return hook


@contextmanager
def ablation_hooks(model: nn.Module, state: HookState) -> Iterator[HookState]:
    """Hook every (layer, component) whose scale is != 1.0 in some condition, and whatever
    ``state.tables`` needs (``intervention_hooks.register_hooks``); remove the hooks on exit.

    An all-ones table (and no or all-identity tables) registers nothing: baseline runs have no overhead."""
    n_layers = len(decoder_layers(model))
    if tuple(state.scales.shape[1:]) != (n_layers, len(COMPONENTS)):
        raise ValueError(f"scale table {tuple(state.scales.shape)} does not fit a {n_layers}-layer model")
    scaled = (state.scales != 1.0).any(0).tolist()  # (L, 2) bool
    handles = []
    try:
        for layer in range(n_layers):
            for ci, comp in enumerate(COMPONENTS):
                if scaled[layer][ci]:
                    hook = _hook(state, layer, comp)
                    handles.append(component_module(model, layer, comp).register_forward_hook(hook))
        if state.tables is not None:
            from bt_assets.lib.intervention_hooks import register_hooks  # it imports this module

            handles += register_hooks(model, state)
        yield state
    finally:
        for h in handles:
            h.remove()
