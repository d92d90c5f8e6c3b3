"""Partition definitions built from the profile: one flat static key per generation cell.

Flat composite keys (``variant=a,condition=b``) rather than MultiPartitions: a single-run backfill of
flat keys is one run with one model load; MultiPartitions split it per first-dimension value.
"""

from __future__ import annotations

import dagster as dg

from bt_assets.config import Profile
from bt_assets.lib.cells import cell_key
from bt_assets.lib.sweeps import SweepCell, sweep_cells


def phase1_keys(profile: Profile) -> list[str]:
    return [cell_key(variant=v, condition="baseline") for v in profile.variant_names]


def ablation_keys(profile: Profile) -> list[str]:
    return [
        cell_key(variant=profile.ablation_variant, condition=c)
        for c in profile.phase1_conditions
        if c != "baseline"
    ]


def phase1_partitions(profile: Profile) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(phase1_keys(profile))


def sweep_cell_list(profile: Profile) -> list[SweepCell]:
    p2 = profile.phase2
    scale_subset = p2.scale_sweep.subset if p2.scale_sweep else None
    scales = p2.scale_sweep.scales if p2.scale_sweep else []
    return sweep_cells([s.name for s in p2.subsets], profile.ablation_scale, scale_subset, scales)


def sweep_partitions(profile: Profile) -> dg.StaticPartitionsDefinition:
    """The sweep cells in the order that keeps cells which go out of date together adjacent
    (``sweep_key_order``): a backfill runs one run, one model load, per contiguous range of keys."""
    return dg.StaticPartitionsDefinition(sweep_key_order(profile))


def sweep_key_order(profile: Profile) -> list[str]:
    """Baseline first; then every cell of one subset together (scales ascending), subsets of fixed
    components before those drawn from ``selected_layers``. A subset edited, a scale added and new
    selected layers each touch one block of adjacent keys, not cells scattered over the range."""
    derived = {s.name for s in profile.phase2.subsets if s.from_selected is not None}
    order = {s.name: i for i, s in enumerate(profile.phase2.subsets)}

    def rank(c: SweepCell) -> tuple:
        if c.subset == "baseline":
            return (0, 0, c.scale)
        return (1 + (c.subset in derived), order.get(c.subset, len(order)), c.scale)

    return [c.key for c in sorted(sweep_cell_list(profile), key=rank)]
