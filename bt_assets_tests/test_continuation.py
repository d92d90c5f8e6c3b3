"""Continuation ablation done right (issue 13, item 8): a seeded sample of events (never the first N),
the onset scored as a token family, and paired clean-minus-ablated drops with problem-clustered
intervals that the finding reads with the evidence floor."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from bt_assets.lib import teacher
from bt_assets.lib.hooks import decoder_layers
from bt_assets.lib.report_onsets import continuation_finding
from bt_assets.lib.selection import sample_events
from bt_assets.lib.stats import Evidence, clustered_mean_interval, mean_interval
from bt_assets.lib.sweep_stats import continuation_summary
from bt_assets.lib.token_family import onset_family, token_family, word_variants
from bt_assets_tests.conftest import WAIT_IDS

EV = Evidence(min_events=5, min_problems=2)


def _rows(events: list[str], scale: float, prob: list[float], logit: list[float], drop: list[float]):
    n = len(events)
    return pl.DataFrame(
        {
            "scale": [scale] * n,
            "event": events,
            "onset_prob": prob,
            "onset_logit": logit,
            "onset_family_prob": prob,
            "synonym_family_prob": [0.1] * n,
            "onset_family_prob_drop": drop,
            "onset_logit_drop": [2 * d for d in drop],
            "top1_is_synonym": [scale != 1.0] * n,
            "top1_is_onset": [scale == 1.0] * n,
        }
    )


KEYS = [f"v/{p}/{s}" for p in range(6) for s in range(2)]  # 12 events of 6 problems


def test_word_variants_cover_case_and_leading_space():
    assert word_variants("hold on") == [
        "hold on", " hold on", "Hold on", " Hold on", "HOLD ON", " HOLD ON",
    ]  # fmt: skip


def test_family_holds_every_casing_and_space_variant(demo_tokenizer):
    family = onset_family(demo_tokenizer, WAIT_IDS[1])  # " Wait"
    assert set(WAIT_IDS) <= family  # "Wait", " Wait", " wait" (and "wait")
    assert all(demo_tokenizer.decode([i]).strip().lower() == "wait" for i in family)
    synonyms = token_family(demo_tokenizer, ["Actually", "Hmm"])
    assert (
        not synonyms & family and demo_tokenizer.encode(" Actually", add_special_tokens=False)[0] in synonyms
    )


def test_paired_drop_is_clean_minus_ablated_with_clustered_interval():
    clean = _rows(KEYS, 1.0, [0.6] * 12, [3.0] * 12, [0.0] * 12)
    drops = [0.3 + 0.02 * i for i in range(12)]
    ablated = _rows(KEYS, 0.0, [0.6 - d for d in drops], [1.0] * 12, drops)
    summary = continuation_summary(pl.concat([clean, ablated]))
    row = summary.filter(pl.col("scale") == 0.0).row(0, named=True)
    assert row["p_onset_drop_mean"] == pytest.approx(sum(drops) / 12)
    _, _, lo, hi = clustered_mean_interval(drops, [k.split("/")[1] for k in KEYS])
    assert (row["p_onset_drop_mean_lo"], row["p_onset_drop_mean_hi"]) == (
        pytest.approx(lo),
        pytest.approx(hi),
    )
    assert hi - lo > mean_interval(drops)[3] - mean_interval(drops)[2]  # wider than iid events
    text = continuation_finding(summary, EV)
    assert "a reduction: the interval excludes 0; 12 BT events from 6 problems" in text
    assert "paired per event" in text
    few = continuation_finding(summary, Evidence(min_events=20, min_problems=2))
    assert "too few to test: 12 BT events from 6 problems" in few and "a reduction" not in few


def test_top1_shares_carry_problem_clustered_intervals():
    """The synonym top-1 share is a mean of a 0/1 indicator per event: its interval is the same
    problem-clustered one as the other means (the shares pool events of several problems)."""
    synonym = [i % 3 == 0 for i in range(12)]
    ablated = _rows(KEYS, 0.0, [0.3] * 12, [1.0] * 12, [0.3] * 12).with_columns(
        pl.Series("top1_is_synonym", synonym)
    )
    row = continuation_summary(ablated).row(0, named=True)
    _, _, lo, hi = clustered_mean_interval([float(x) for x in synonym], [k.split("/")[1] for k in KEYS])
    assert row["synonym_share"] == pytest.approx(4 / 12)
    assert (row["synonym_share_lo"], row["synonym_share_hi"]) == (
        pytest.approx(max(lo, 0.0)),
        pytest.approx(hi),
    )
    assert "synonym top-1 33.3% [" in continuation_finding(continuation_summary(ablated), EV)


def test_one_event_has_no_interval_and_no_direction():
    df = pl.concat([_rows(["a"], 1.0, [0.5], [3.0], [0.0]), _rows(["a"], 0.0, [0.1], [1.0], [0.4])])
    one = continuation_summary(df).filter(pl.col("scale") == 0.0).row(0, named=True)
    assert one["p_onset_drop_mean_lo"] is None and one["p_onset_mean_lo"] is None
    text = continuation_finding(continuation_summary(df), EV)
    assert text.startswith("Clean P(onset family) 50.0% (n=1 events)") and "too few to test" in text


def test_the_sample_is_seeded_and_not_the_first_n():
    rows = pl.DataFrame({"variant": ["v"] * 40, "example_id": list(range(40)), "sample_id": [0] * 40})
    picked = sample_events(rows, 10, seed=42)
    assert picked.height == 10 and picked["example_id"].to_list() != list(range(10))
    assert picked.equals(sample_events(rows, 10, seed=42))
    assert not picked.equals(sample_events(rows, 10, seed=7))


@pytest.mark.slow
def test_drops_on_a_model_are_paired_per_event(tiny_dirs, demo_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dirs["qwen2"], dtype=torch.float32).eval()
    ids = tuple(
        demo_tokenizer.encode("Tom has 3 apples. He eats one. So he has 2. Wait", add_special_tokens=False)
    )
    events = [teacher.Event(f"v/{i}/0", ids, len(ids) - 2, ids[-1]) for i in range(2)]
    table = torch.ones(2, len(decoder_layers(model)), 2)
    table[1, :, 1] = 0.0  # every MLP zeroed at the onset position
    rows = teacher.continuation_rows(
        model, demo_tokenizer, events, table, [1.0, 0.0], 3, ["Actually"], "all_mlp"
    )
    by = {(r["event"], r["condition"]): r for r in rows}
    for ev in events:
        clean, abl = by[(ev.key, "clean")], by[(ev.key, "ablated")]
        assert abl["onset_family_prob_drop"] == pytest.approx(
            clean["onset_family_prob"] - abl["onset_family_prob"]
        )
        assert abl["onset_logit_drop"] == pytest.approx(clean["onset_logit"] - abl["onset_logit"])
        assert abl["onset_family_prob_drop"] != 0.0  # zeroing every MLP changes the prediction
