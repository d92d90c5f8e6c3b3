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
        for c in profile.phase1.conditions
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
    return dg.StaticPartitionsDefinition([c.key for c in sweep_cell_list(profile)])
