"""Ablation hooks: scale the attention / MLP output (the component's write into the residual stream)
per (layer, component) and per batch row.

A scale table ``scales[C, L, 2]`` (1.0 = untouched) holds one row per condition; ``row_condition[B]``
maps batch rows to conditions, so one batch can carry several conditions. The decoding loop sets an
explicit ``phase`` ("prefill", "decode", "teacher"); with ``decode_only`` the hooks leave the prefill
alone (the prompt's K/V stay intact) instead of guessing the phase from the sequence length.
Hooks live in a context manager that removes them in ``finally``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

COMPONENTS = ("attn", "mlp")
Phase = Literal["prefill", "decode", "teacher"]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a Qwen2/Llama-style causal LM (``model.model.layers``)."""
    return model.model.layers


def component_module(model: nn.Module, layer: int, comp: str) -> nn.Module:
    block = decoder_layers(model)[layer]
    return block.self_attn if comp == "attn" else block.mlp


def scale_table(conditions: Sequence[Mapping[tuple[str, int], float]], n_layers: int) -> torch.Tensor:
    """(C, n_layers, 2) float32 table from per-condition {(component, layer): scale}; 1.0 elsewhere."""
    table = torch.ones(max(len(conditions), 1), n_layers, len(COMPONENTS))
    for c, spec in enumerate(conditions):
        for (comp, layer), scale in spec.items():
            if comp not in COMPONENTS:
                raise ValueError(f"unknown component {comp!r} (expected one of {COMPONENTS})")
            if not 0 <= int(layer) < n_layers:
                raise ValueError(f"layer {layer} out of range for a {n_layers}-layer model")
            table[c, int(layer), COMPONENTS.index(comp)] = float(scale)
    return table


@dataclass
class HookState:
    """What the hooks read at call time, and what they count over a whole run.

    ``counts[(phase, component, layer)]`` = hook calls; ``applied[...]`` = calls that scaled some row;
    ``cell_counts[(condition, phase, component, layer)]`` = [calls, applied] for the conditions present
    in the batch (``present`` is set by the caller per batch, so the hook never syncs with the device).
    """

    scales: torch.Tensor
    row_condition: torch.Tensor
    phase: Phase = "prefill"
    decode_only: bool = True
    positions: torch.Tensor | None = None
    present: tuple[int, ...] = ()
    counts: Counter = field(default_factory=Counter)
    applied: Counter = field(default_factory=Counter)
    cell_counts: Counter = field(default_factory=Counter)

    @classmethod
    def empty(cls) -> HookState:
        return cls(scales=torch.ones(1, 1, len(COMPONENTS)), row_condition=torch.zeros(1, dtype=torch.long))

    def count_table(self) -> list[dict]:
        return [{"phase": p, "component": c, "layer": layer, "calls": n, "applied": self.applied[(p, c, layer)]}
                for (p, c, layer), n in sorted(self.counts.items())]

    def cell_table(self) -> list[dict]:
        keys = sorted({k[:4] for k in self.cell_counts})
        return [{"condition": k[0], "phase": k[1], "component": k[2], "layer": k[3],
                 "calls": self.cell_counts[(*k, "calls")], "applied": self.cell_counts[(*k, "applied")]}
                for k in keys]


def _hook(state: HookState, layer: int, comp: str):
    ci = COMPONENTS.index(comp)

    def hook(_module: nn.Module, _inputs, output):
        phase = state.phase
        state.counts[(phase, comp, layer)] += 1
        skip = state.decode_only and phase == "prefill"
        col = state.scales[:, layer, ci]
        for cond in state.present:
            state.cell_counts[(cond, phase, comp, layer, "calls")] += 1
            if not skip and float(col[cond]) != 1.0:
                state.cell_counts[(cond, phase, comp, layer, "applied")] += 1
        if skip:
            return output
        state.applied[(phase, comp, layer)] += 1
        x = output[0] if isinstance(output, tuple) else output  # (B, T, d)
        s = col.to(x.device, x.dtype)[state.row_condition]  # (B,)
        if state.positions is None:
            y = x * s.view(-1, 1, 1)
        else:
            y = x.clone()
            rows = torch.arange(x.shape[0], device=x.device)
            pos = state.positions.to(x.device)
            y[rows, pos] = x[rows, pos] * s.view(-1, 1)
        return (y, *output[1:]) if isinstance(output, tuple) else y

    return hook


@contextmanager
def ablation_hooks(model: nn.Module, state: HookState) -> Iterator[HookState]:
    """Register hooks on every module whose scale column is not all 1.0; remove them on exit.

    Rows whose scale is exactly 1.0 are multiplied by 1.0, which is exact in floating point, so they
    stay bit-identical to an unhooked forward of the same batch."""
    handles = []
    n_layers = len(decoder_layers(model))
    try:
        for layer in range(min(n_layers, state.scales.shape[1])):
            for ci, comp in enumerate(COMPONENTS):
                if bool((state.scales[:, layer, ci] != 1.0).any()):
                    module = component_module(model, layer, comp)
                    handles.append(module.register_forward_hook(_hook(state, layer, comp)))
        yield state
    finally:
        for h in handles:
            h.remove()
