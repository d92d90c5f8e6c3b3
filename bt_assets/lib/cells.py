"""Generation cells: which prompts run under which per-(component, layer) scales, keyed by partition.

A cell key is flat, ``name=value,...`` (``variant=a,condition=baseline`` or
``subset=selected_mlp,scale=0.5``): one static partition per cell, so a single-run backfill of any set
of cells is one run with one model load. Phase-1 baseline cells are unhooked; ablation cells scale the
selected (targeted) or random layers' outputs at every decode step; sweep cells scale a subset.
Every seed of ``ablation.random_seeds`` is its own random-control condition (``random_ablation_s<seed>``),
paired with the baseline through the same counter-based sampling keys; reports add their pooled row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from bt_assets.lib.conditions import random_seed_of
from bt_assets.lib.generation import Cell
from bt_assets.lib.sweeps import SweepCell, subset_components


def cell_key(**parts: object) -> str:
    return ",".join(f"{k}={v}" for k, v in parts.items())


def parse_cell_key(key: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in key.split(","))


def baseline_cells(prompts: pl.DataFrame, keys: Sequence[str]) -> list[Cell]:
    """Unhooked cells, one per ``variant=V,condition=baseline`` key, each with its variant's prompts."""
    return [ablation_cell(prompts, key, {}) for key in keys]


def ablation_cell(prompts: pl.DataFrame, key: str, scales: Mapping[tuple[str, int], float]) -> Cell:
    """The cell of one ``variant=V,condition=C`` key with ``scales`` applied at decode steps."""
    parts = parse_cell_key(key)
    rows = prompts.filter(pl.col("variant") == parts["variant"])
    return Cell(key=key, variant=parts["variant"], condition=parts["condition"], prompts=rows, scales=scales)


def condition_scales(
    condition: str,
    selected: Mapping[str, Sequence[int]],
    random_sets: Mapping[str, Mapping[str, Sequence[int]]],
    scale: float,
) -> dict[tuple[str, int], float]:
    """(component, layer) -> scale of a Phase-1 ablation condition: the selected layers
    (``targeted_ablation``) or the random layer set of the condition's seed (``random_ablation_s<seed>``)."""
    seed = random_seed_of(condition)
    if condition != "targeted_ablation" and seed is None:
        raise ValueError(f"unknown ablation condition {condition!r}")
    if seed is not None and str(seed) not in random_sets:
        have = sorted(random_sets)
        raise ValueError(f"{condition}: random_layers has no set for seed {seed} (sets: {have})")
    layers = selected if seed is None else random_sets[str(seed)]
    return {(comp, int(layer)): scale for comp, ls in layers.items() for layer in ls}


def ablation_cells(
    prompts: pl.DataFrame,
    keys: Sequence[str],
    selected: Mapping[str, Sequence[int]],
    random_sets: Mapping[str, Mapping[str, Sequence[int]]],
    scale: float,
) -> list[Cell]:
    """The Phase-1 ablation cells of ``keys``
    (``variant=V,condition=targeted_ablation|random_ablation_s<seed>``)."""
    return [
        ablation_cell(
            prompts, key, condition_scales(parse_cell_key(key)["condition"], selected, random_sets, scale)
        )
        for key in keys
    ]


def sweep_cell(
    cell: SweepCell,
    subsets: Mapping[str, object],
    selected: Mapping[str, Sequence[int]] | None,
    variant: str,
    prompts: pl.DataFrame,
) -> Cell:
    """The generation cell of a sweep cell: its subset's (component, layer)s scaled by its scale (the
    baseline cell is unhooked; its condition is the cell key, so every cell is its own condition)."""
    comps = [] if cell.subset == "baseline" else subset_components(subsets[cell.subset], selected)
    scales = {} if cell.scale == 1.0 and cell.subset == "baseline" else {c: cell.scale for c in comps}
    return Cell(key=cell.key, variant=variant, condition=cell.key, prompts=prompts, scales=scales)
