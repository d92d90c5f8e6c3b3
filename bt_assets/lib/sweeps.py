"""Phase-2 sweep cells: which components are scaled by how much, per cell.

A cell is (subset, scale): the baseline cell (no hook), one cell per named subset at the ablation
scale, and one cell per scale of the scale-sweep subset (1.0 included as a sanity cell that must equal
the baseline token for token). Subsets are lists of (component, layer) or derived from the Phase-1
``selected_layers`` (``from_selected`` = attn / mlp / all, optionally only the ``top`` n).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bt_assets.lib.hooks import COMPONENTS


@dataclass(frozen=True)
class SweepCell:
    key: str
    subset: str
    scale: float
    sweeps: tuple[str, ...]  # which tables the cell belongs to: "subset", "scale"


def fmt_scale(scale: float) -> str:
    return f"{scale:g}"


def sweep_cells(
    subsets: Sequence[str], ablation_scale: float, scale_subset: str | None, scales: Sequence[float]
) -> list[SweepCell]:
    """Every distinct cell, baseline first; a cell used by both sweeps appears once."""
    cells: dict[tuple[str, str], set[str]] = {("baseline", fmt_scale(1.0)): {"subset", "scale"}}
    for name in subsets:
        cells.setdefault((name, fmt_scale(ablation_scale)), set()).add("subset")
    for s in scales if scale_subset else ():
        cells.setdefault((scale_subset, fmt_scale(s)), set()).add("scale")
    return [SweepCell(f"subset={n},scale={s}", n, float(s), tuple(sorted(w))) for (n, s), w in cells.items()]


def subset_components(subset, selected: Mapping[str, Sequence[int]] | None) -> list[tuple[str, int]]:
    """Resolve a subset config (``components`` and/or ``from_selected`` + ``top``) to (component, layer)."""
    comps = [(c, int(layer)) for c, layer in subset.components]
    if subset.from_selected is not None:
        if selected is None:
            raise ValueError(f"subset {subset.name!r} derives from selected_layers, which are not available")
        kinds = COMPONENTS if subset.from_selected == "all" else (subset.from_selected,)
        for kind in kinds:
            layers = list(selected.get(kind, []))
            comps += [(kind, int(layer)) for layer in (layers[: subset.top] if subset.top else layers)]
    return sorted(set(comps), key=lambda x: (x[0], x[1]))


def check_layers(components: Sequence[tuple[str, int]], n_layers: int, where: str) -> None:
    bad = [layer for _, layer in components if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"{where}: layers {bad} out of range for a {n_layers}-layer model")
