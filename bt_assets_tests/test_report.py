"""Report findings claim only what the numbers support: no "interval excludes" from one event, a
degenerate bootstrap interval, or events from a single problem; t-intervals for small means."""

import math

import polars as pl
import pytest

from bt_assets.lib import report as R
from bt_assets.lib.stats import Evidence, mean_interval, t_quantile_975
from bt_assets.lib.sweep_stats import continuation_summary

EV = Evidence(min_events=5, min_problems=2)


def test_t_quantiles_match_tables_and_join_the_expansion():
    assert t_quantile_975(1) == pytest.approx(12.706)
    assert t_quantile_975(4) == pytest.approx(2.776)
    assert t_quantile_975(30) == pytest.approx(2.042)
    assert t_quantile_975(31) == pytest.approx(2.040, abs=1e-3)
    assert t_quantile_975(120) == pytest.approx(1.980, abs=1e-3)
    assert t_quantile_975(10_000) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_mean_interval_small_samples():
    assert all(math.isnan(v) for v in mean_interval([]))
    mean, std, lo, hi = mean_interval([2.5])
    assert (mean, std) == (2.5, 0.0) and math.isnan(lo) and math.isnan(hi)  # no spread from one event
    mean, std, lo, hi = mean_interval([1, 2, 3, 4, 5])
    half = 2.776 * std / math.sqrt(5)
    assert mean == 3 and std == pytest.approx(1.5811, abs=1e-4)
    assert (lo, hi) == (pytest.approx(3 - half, abs=1e-3), pytest.approx(3 + half, abs=1e-3))


@pytest.mark.parametrize(
    ("lo", "hi", "events", "problems", "expected"),
    [
        (1.2, 2.0, 20, 8, True),
        (0.5, 1.5, 20, 8, False),  # includes the value
        (1.2, 2.0, 4, 4, False),  # too few events
        (1.2, 2.0, 20, 1, False),  # one problem
        (0.0, 0.0, 50, 10, False),  # degenerate interval
        (float("nan"), 2.0, 50, 10, False),
        (None, 2.0, 50, 10, False),
    ],
)
def test_evidence_excludes(lo, hi, events, problems, expected):
    assert EV.excludes(lo, hi, 1.0, events, problems) is expected


def summary(n_bt: int, bt_problems: int, lift: float, lo: float, hi: float) -> dict:
    return {
        "n": 288,
        "n_bt": n_bt,
        "n_bt_problems": bt_problems,
        "acc_with_bt": 0.0,
        "acc_without_bt": 0.01,
        "lift": lift,
        "lift_lo": lo,
        "lift_hi": hi,
    }


def test_lift_finding_names_a_zero_width_interval():
    text = R.lift_finding(summary(9, 9, 0.0, 0.0, 0.0), None, EV)
    assert "zero-width (0.00-0.00" in text and "no direction is claimed" in text and "excludes" not in text


def test_lift_finding_makes_no_claim_from_two_events():
    text = R.lift_finding(summary(2, 2, 0.0, 0.0, 0.0), None, EV)
    assert "excludes 1" not in text and "lower in accuracy" not in text
    assert "too few to test: 2 BT events from 2 problems" in text


def test_lift_finding_claims_with_enough_events():
    text = R.lift_finding(summary(40, 12, 0.6, 0.4, 0.8), 2.06, EV)
    assert "lower in accuracy and the interval excludes 1" in text and "2.06x" in text
    text = R.lift_finding(summary(40, 12, 0.9, 0.7, 1.1), None, EV)
    assert "do not show" in text


def lens(n: int, bt_lo: float) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "layer": [0, 1, 2],
            "mean_target_logit_bt": [1.0, 5.0, 9.0],
            "mean_target_logit_bt_lo": [0.0, bt_lo, bt_lo],
            "mean_target_logit_control": [1.0, 2.0, 3.0],
            "mean_target_logit_control_hi": [2.0, 3.0, 4.0],
            "n_bt": [n] * 3,
            "n_control": [n] * 3,
        }
    )


def test_lens_finding_needs_events_from_several_problems():
    one = R.lens_finding(lens(1, 4.5), 1, EV)
    assert "separates" not in one and "too few to test: 1 BT event from 1 problem" in one
    many = R.lens_finding(lens(30, 4.5), 12, EV)
    assert "from layer 1 on" in many and "2 of 3 layers" in many
    assert "not separated" in R.lens_finding(lens(30, 2.5), 12, EV)


def scan(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "layer": [0, 1, 0, 1],
            "component": ["attn", "attn", "mlp", "mlp"],
            "delta_logit_mean": [-3.0, 1.0, -1.0, float("nan")],
            "delta_logit_mean_lo": [-4.0, 0.5, -2.0, float("nan")],
            "delta_logit_mean_hi": [-2.0, 1.5, 0.5, float("nan")],
            "delta_logprob_mean": [-1.0, 0.2, -0.5, float("nan")],
            "n_events": [n] * 4,
        }
    )


def test_scan_finding_is_descriptive_with_one_event():
    text = R.scan_finding(scan(1), {"attn": [0], "mlp": [0]}, 1, EV)
    assert "excludes 0" not in text and "descriptive only" in text
    text = R.scan_finding(scan(25), {"attn": [0], "mlp": [0]}, 9, EV)
    assert "attn 0 (-3.00 logits, -1.00 log-prob; interval excludes 0)" in text
    assert "mlp 0 (-1.00 logits, -0.50 log-prob; includes 0)" in text and "descriptive" not in text


def cell(subset: str, scale: float, bt: int, pairs: int, problems: int) -> dict:
    return {
        "cell": f"subset={subset},scale={scale}",
        "subset": subset,
        "scale": scale,
        "n_components": 2,
        "n": 96,
        "bt_count": bt,
        "bt_rate": bt / 96,
        "accuracy": 0.02,
        "delta_bt": -0.05,
        "delta_bt_lo": -0.08,
        "delta_bt_hi": -0.02,
        "bt_pairs": pairs,
        "bt_pair_problems": problems,
    }


def sweep(pairs: int, problems: int) -> dict:
    base = cell("baseline", 1.0, 6, 0, 0)
    late = cell("late", 0.0, 1, pairs, problems)
    best = {**late, "relative_bt_reduction": 5 / 6, "accuracy_floor": 0.01}
    return {"baseline": base, "subset": [base, late], "scale": [late], "best_tradeoff": best}


def test_sweep_finding_needs_pairs_with_events():
    few = R.sweep_finding(sweep(3, 2), EV)
    assert "excludes 0" not in few and "3 pairs with a BT event: too few to test" in few
    assert "too few to test: 3 BT events from 2 problems" in few  # on the best trade-off too
    enough = R.sweep_finding(sweep(12, 6), EV)
    assert "(paired interval excludes 0)" in enough and "too few" not in enough
    assert "late (2 components): BT 1.0%, paired change -5.0 points [-8.0, -2.0]" in enough


def test_readers_do_not_fall_back_to_old_spellings():
    """A table under an old column name is an error that names the missing column."""
    old_lens = lens(30, 4.5).rename({"mean_target_logit_bt_lo": "ci_low_bt"})
    with pytest.raises(pl.exceptions.ColumnNotFoundError, match="mean_target_logit_bt_lo"):
        R.lens_finding(old_lens, 12, EV)
    old_scan = scan(25).rename({"delta_logit_mean_lo": "delta_logit_ci_low"})
    with pytest.raises(KeyError, match="delta_logit_mean_lo"):
        R.scan_finding(old_scan, {"attn": [0]}, 9, EV)
    results = sweep(12, 6)
    results["subset"][1] = {
        ("num_components" if k == "n_components" else k): v for k, v in results["subset"][1].items()
    }
    with pytest.raises(KeyError, match="n_components"):
        R.sweep_finding(results, EV)


def test_scale_finding_reads_no_dose_response_from_few_events():
    rows = [cell("late", s, bt, 0, 0) for s, bt in ((0.0, 0), (0.5, 1), (1.0, 1))]
    text = R.scale_finding({"scale": rows}, EV)
    assert "no dose-response" in text and "monotone" not in text and "non-decreasing" not in text
    rows = [cell("late", s, bt, 0, 0) for s, bt in ((0.0, 1), (0.5, 4), (1.0, 6))]
    assert "non-decreasing in the scale" in R.scale_finding({"scale": rows}, EV)
    rows = [cell("late", s, bt, 0, 0) for s, bt in ((0.0, 6), (0.5, 1), (1.0, 6))]
    assert "not monotone" in R.scale_finding({"scale": rows}, EV)


def test_continuation_interval_undefined_for_one_event():
    df = pl.DataFrame(
        {
            "scale": [1.0, 0.0, 1.0, 0.0],
            "event": ["a", "a", "b", "b"],
            "onset_prob": [0.5, 0.1, 0.7, 0.3],
            "onset_logit": [3.0, 1.0, 4.0, 2.0],
            "top1_is_synonym": [False, True, False, False],
            "top1_is_onset": [True, False, True, False],
        }
    )
    two = continuation_summary(df).filter(pl.col("scale") == 1.0).row(0, named=True)
    half = 12.706 * 0.5  # t(1) x sd of the two logits (0.7071) / sqrt(2)
    assert (two["logit_mean_lo"], two["logit_mean_hi"]) == (
        pytest.approx(3.5 - half),
        pytest.approx(3.5 + half),
    )
    assert (two["p_onset_mean_lo"], two["p_onset_mean_hi"]) == (0.0, 1.0)  # 0.6 -/+ 1.27, clipped to [0, 1]
    one = continuation_summary(df.filter(pl.col("event") == "a")).row(0, named=True)
    assert one["p_onset_mean_lo"] is None and one["p_onset_mean_hi"] is None
    assert "P(onset) 50.0% (n=1 events)" in R.continuation_finding(
        continuation_summary(df.filter(pl.col("event") == "a"))
    )
    text = R.continuation_finding(continuation_summary(df))
    assert text.startswith(
        "Clean P(onset) 60.0% [0.0, 100.0]% (n=2 events); scale 0: P(onset) 20.0% [0.0, 100.0]%"
    )
