"""Event sampling and position-matched controls (B7, B8, B19), pooled over variants."""

import polars as pl
import pytest

from bt_assets.lib.selection import match_controls, random_layers, sample_events


def rows(variants: list[str], problems: int, samples: int, **cols) -> pl.DataFrame:
    keys = [(v, e, s) for v in variants for e in range(problems) for s in range(samples)]
    n = len(keys)
    return pl.DataFrame(
        {
            "variant": [k[0] for k in keys],
            "example_id": [k[1] for k in keys],
            "sample_id": [k[2] for k in keys],
            **{c: [f(i) for i in range(n)] for c, f in cols.items()},
        }
    )


def test_sample_is_seeded_spread_and_keyed_by_variant():
    bt = rows(["a", "b"], 10, 2)  # the same (example, sample) in two variants: distinct events
    one = sample_events(bt, 12, seed=1)
    assert one.equals(sample_events(bt, 12, seed=1)) and not one.equals(sample_events(bt, 12, seed=2))
    assert one.height == 12 and one.select("variant", "example_id", "sample_id").is_unique().all()
    assert one["example_id"].n_unique() > 3  # not the first events in file order (B19)
    assert sample_events(bt, 100, seed=1).height == 40
    assert sample_events(bt.clear(), 5, seed=1).height == 0


def test_single_variant_sample_unchanged_by_the_variant_key():
    """With one variant, keying by (variant, example, sample) draws the same events as before."""
    import random

    bt = rows(["a"], 30, 2)
    keys = sorted(zip(bt["example_id"].to_list(), bt["sample_id"].to_list(), strict=True))
    expected = sorted(random.Random(7).sample(keys, 9))
    got = sample_events(bt, 9, seed=7)
    assert list(zip(got["example_id"], got["sample_id"], strict=True)) == expected


def test_controls_match_position_and_carry_their_own_variant():
    events = rows(
        ["a", "b"], 2, 1, onset_token_in_completion=lambda i: 5 + i, onset_token_id=lambda i: 100 + i
    )
    pool = rows(
        ["b"], 6, 1, completion_tokens=lambda i: [3, 50, 50, 50, 50, 50][i], prompt_tokens=lambda i: 20
    )
    ctl = match_controls(events, pool, seed=0)
    assert ctl.height == 4 and ctl["control_example_id"].is_unique().all()
    assert (ctl["control_variant"] == "b").all() and ctl["event_variant"].to_list() == ["a", "a", "b", "b"]
    assert 0 not in ctl["control_example_id"].to_list()  # 3 tokens: too short for an onset at 5+ (B7)
    assert ctl["pred_pos"].to_list() == [20 + k - 1 for k in ctl["offset"]]
    assert ctl["target"].to_list() == [100, 101, 102, 103]  # scored on the event's token (B8)


def test_random_layers_draw_from_the_whole_model():
    """Layers selected from a scanned subset (late layers only): the controls come from every other layer
    of the model, deterministically per seed, shape-matched, never a selected layer."""
    selected = {"attn": [27, 25], "mlp": [26]}
    sets = random_layers(selected, 28, [999, 1000])
    assert sets == random_layers(selected, 28, [999, 1000]) and list(sets) == ["999", "1000"]
    drawn = [layer for s in sets.values() for layers in s.values() for layer in layers]
    assert all(0 <= layer < 25 for layer in drawn)
    assert all({c: len(v) for c, v in s.items()} == {"attn": 2, "mlp": 1} for s in sets.values())
    pooled = {
        layer for s in random_layers(selected, 28, range(40)).values() for v in s.values() for layer in v
    }
    assert pooled == set(range(25))  # every unselected layer can be drawn, not only the scanned window
    with pytest.raises(ValueError, match="outside a 20-layer model"):
        random_layers(selected, 20, [1])  # a count below the selection's layers is an error
