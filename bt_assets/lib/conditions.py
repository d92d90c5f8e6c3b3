"""Phase-1 condition names. Every seed of ``ablation.random_seeds`` is its own random-control condition
(``random_ablation_s<seed>``: the shape-matched random layer set drawn with that seed), generated and
paired with the baseline through the same counter-based sampling keys; reports show each seed and, with
two seeds or more, their pooled rows (``random_ablation_pooled``)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import polars as pl

RANDOM = "random_ablation"
POOLED_RANDOM = "random_ablation_pooled"


def random_condition(seed: int) -> str:
    """The condition of the random layer set drawn with ``seed``."""
    return f"{RANDOM}_s{seed}"


def random_seed_of(condition: str) -> int | None:
    """The seed of a per-seed random condition (``random_ablation_s999`` -> 999), else None."""
    m = re.fullmatch(rf"{RANDOM}_s(-?\d+)", condition)
    return int(m.group(1)) if m else None


def expand_conditions(conditions: Sequence[str], seeds: Sequence[int]) -> list[str]:
    """The generated conditions: ``random_ablation`` becomes one condition per random seed."""
    out: list[str] = []
    for c in conditions:
        out += [random_condition(s) for s in seeds] if c == RANDOM else [c]
    return out


def with_pooled_random(view: pl.DataFrame, conditions: Sequence[str]) -> tuple[pl.DataFrame, list[str]]:
    """``view`` plus its per-seed random rows once more as ``random_ablation_pooled`` (when there are two
    seeds or more), and ``conditions`` with the pooled one after the seeds. The pooled rows are the union
    of the seeds' completions, so a problem-clustered interval on them counts every seed's rows of a
    problem in one cluster."""
    seeds = [c for c in conditions if random_seed_of(c) is not None]
    if len(seeds) < 2:
        return view, list(conditions)
    pooled = view.filter(pl.col("condition").is_in(seeds)).with_columns(condition=pl.lit(POOLED_RANDOM))
    at = max(conditions.index(c) for c in seeds) + 1
    order = [*conditions[:at], POOLED_RANDOM, *conditions[at:]]
    return pl.concat([view, pooled], how="vertical_relaxed"), order
