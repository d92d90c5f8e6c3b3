"""Random-control conditions: one generated condition per seed, each with its own layer set, and their
pooled rows for the reports; the paper graph holds a partition per seed."""

from __future__ import annotations

import polars as pl
import pytest

from bt_assets.config import load_profile
from bt_assets.lib.cells import ablation_cells, condition_scales
from bt_assets.lib.conditions import (
    POOLED_RANDOM,
    expand_conditions,
    random_condition,
    random_seed_of,
    with_pooled_random,
)
from bt_assets.partitions import ablation_keys

SELECTED = {"attn": [3], "mlp": [5]}
RANDOM_SETS = {"7": {"attn": [1], "mlp": [2]}, "8": {"attn": [4], "mlp": [0]}}


def test_each_seed_is_a_condition_and_round_trips():
    conds = expand_conditions(["baseline", "targeted_ablation", "random_ablation"], [7, 8, -3])
    assert conds == [
        "baseline",
        "targeted_ablation",
        "random_ablation_s7",
        "random_ablation_s8",
        "random_ablation_s-3",
    ]
    assert [random_seed_of(c) for c in conds] == [None, None, 7, 8, -3]
    assert random_seed_of(POOLED_RANDOM) is None and random_seed_of("random_ablation") is None


def test_each_random_condition_scales_its_own_seeds_layers():
    assert condition_scales(random_condition(7), SELECTED, RANDOM_SETS, 0.0) == {
        ("attn", 1): 0.0,
        ("mlp", 2): 0.0,
    }
    assert condition_scales(random_condition(8), SELECTED, RANDOM_SETS, 0.5) == {
        ("attn", 4): 0.5,
        ("mlp", 0): 0.5,
    }
    assert condition_scales("targeted_ablation", SELECTED, RANDOM_SETS, 0.0) == {
        ("attn", 3): 0.0,
        ("mlp", 5): 0.0,
    }
    with pytest.raises(ValueError, match="no set for seed 9"):
        condition_scales(random_condition(9), SELECTED, RANDOM_SETS, 0.0)
    with pytest.raises(ValueError, match="unknown ablation condition 'random_ablation'"):
        condition_scales("random_ablation", SELECTED, RANDOM_SETS, 0.0)


def test_ablation_cells_carry_one_set_per_seed():
    prompts = pl.DataFrame({"example_id": [1], "variant": ["a"], "prompt": ["p"], "prompt_hash": ["h"]})
    keys = [f"variant=a,condition={random_condition(s)}" for s in (7, 8)]
    cells = ablation_cells(prompts, keys, SELECTED, RANDOM_SETS, 0.0)
    assert [dict(c.scales) for c in cells] == [
        {("attn", 1): 0.0, ("mlp", 2): 0.0},
        {("attn", 4): 0.0, ("mlp", 0): 0.0},
    ]
    assert [c.condition for c in cells] == ["random_ablation_s7", "random_ablation_s8"]


def test_pooled_rows_are_the_union_of_the_seeds():
    view = pl.DataFrame(
        {
            "condition": ["baseline", "random_ablation_s7", "random_ablation_s8", "random_ablation_s8"],
            "example_id": [1, 1, 1, 2],
            "has_backtracking_strict": [True, False, True, True],
        }
    )
    conds = ["baseline", "random_ablation_s7", "random_ablation_s8", "targeted_ablation"]
    out, order = with_pooled_random(view, conds)
    assert order == [
        "baseline",
        "random_ablation_s7",
        "random_ablation_s8",
        POOLED_RANDOM,
        "targeted_ablation",
    ]
    pooled = out.filter(pl.col("condition") == POOLED_RANDOM)
    assert pooled.height == 3 and pooled["has_backtracking_strict"].sum() == 2
    one, order_one = with_pooled_random(view, ["baseline", "random_ablation_s7"])  # one seed: no pooled row
    assert one.height == view.height and POOLED_RANDOM not in order_one


@pytest.mark.parametrize("name", ["paper", "study"])
def test_paper_graph_has_a_generated_control_per_seed(name):
    profile = load_profile(name)
    keys = ablation_keys(profile)
    for seed in profile.ablation.random_seeds:
        assert f"variant={profile.ablation_variant},condition=random_ablation_s{seed}" in keys
    assert len(keys) == 1 + len(profile.ablation.random_seeds) >= 4


def test_an_import_keeps_the_original_condition_names():
    assert load_profile("original_run").phase1_conditions == [
        "baseline",
        "targeted_ablation",
        "random_ablation",
    ]
