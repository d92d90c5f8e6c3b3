"""Report findings claim only what the numbers support: no "interval excludes" from one event, a
degenerate bootstrap interval, or events from a single problem; t-intervals for small means."""

import json
import math

import polars as pl
import pytest

from bt_assets.lib import report as R
from bt_assets.lib.stats import Evidence, mean_interval, t_quantile_975
from bt_assets.lib.sweep_stats import best_tradeoff

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
            "mean_target_logit_bt_hi": [2.0, 5.5, 9.5],
            "mean_target_logit_control": [1.0, 2.0, 3.0],
            "mean_target_logit_control_lo": [0.0, 1.0, 2.0],
            "mean_target_logit_control_hi": [2.0, 3.0, 4.0],
            "n_bt": [n] * 3,
            "n_control": [n] * 3,
        }
    )


def test_lens_finding_needs_events_from_several_problems():
    one = R.lens_finding(lens(1, 4.5), 1, EV)
    assert "separates" not in one and "too few to test: 1 BT event from 1 problem" in one
    many = R.lens_finding(lens(30, 4.5), 12, EV)
    assert "in 2 of 3 layers" in many and "30 BT events from 12 problems and 30" in many
    assert (
        "higher for BT events at layers 1-2 (narrowest at layer 2): BT 9.00 [4.50, 9.50] vs control" in many
    )
    assert "overlap at every one of the 3 layers" in R.lens_finding(lens(30, 2.5), 12, EV)


def test_lens_finding_names_non_consecutive_layers_and_both_directions():
    """Layers 0, 2-3 and 5 separate (never 'from layer 0 on'); layer 5 in the other direction."""
    bt_lo = [3.0, 0.0, 3.5, 4.0, 0.0, -3.0]
    df = pl.DataFrame(
        {
            "layer": list(range(6)),
            "mean_target_logit_bt": [4.0, 1.0, 5.0, 6.0, 1.0, -2.0],
            "mean_target_logit_bt_lo": bt_lo,
            "mean_target_logit_bt_hi": [b + 2.0 for b in bt_lo],
            "mean_target_logit_control": [1.0] * 6,
            "mean_target_logit_control_lo": [0.0] * 6,
            "mean_target_logit_control_hi": [2.0] * 6,
            "n_bt": [40] * 6,
            "n_control": [38] * 6,
        }
    )
    text = R.lens_finding(df, 15, EV)
    assert "from layer" not in text
    assert "in 4 of 6 layers" in text
    assert "higher for BT events at layer 0: BT 4.00 [3.00, 5.00] vs control 1.00 [0.00, 2.00]" in text
    assert "layers 2-3 (narrowest at layer 2): BT 5.00 [3.50, 5.50]" in text
    assert "lower for BT events at layer 5: BT -2.00 [-3.00, -1.00] vs control 1.00 [0.00, 2.00]" in text
    assert "40 BT events from 15 problems and 38 position-matched controls" in text
    assert R.layer_ranges([7, 0, 1, 2, 5, 8]) == [(0, 2), (5, 5), (7, 8)] and R.layer_ranges([]) == []


def scan(n: int, scale: float = 0.0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "layer": [0, 1, 0, 1],
            "component": ["attn", "attn", "mlp", "mlp"],
            "delta_logit_mean": [-3.0, 1.0, -1.0, float("nan")],
            "delta_logit_mean_lo": [-4.0, 0.5, -2.0, float("nan")],
            "delta_logit_mean_hi": [-2.0, 1.5, 0.5, float("nan")],
            "delta_logprob_mean": [-1.0, 0.2, -0.5, float("nan")],
            "n_events": [n] * 4,
            "scale": [scale] * 4,
        }
    )


def test_scan_finding_is_descriptive_with_one_event():
    text = R.scan_finding(scan(1), {"attn": [0], "mlp": [0]}, 1, EV)
    assert "excludes 0" not in text and "descriptive only" in text
    text = R.scan_finding(scan(25), {"attn": [0], "mlp": [0]}, 9, EV)
    assert (
        "attn 0 (-3.00 logits [-4.00, -2.00], -1.00 log-prob; a reduction: the interval excludes 0; "
        "25 events from 9 problems)" in text
    )
    assert "mlp 0 (-1.00 logits [-2.00, 0.50], -0.50 log-prob; the interval includes 0" in text
    assert "The largest mean change is attn 1 (+1.00 logits [0.50, 1.50], +0.20 log-prob; an increase" in text
    assert "descriptive" not in text


def test_scan_finding_names_the_scan_scale():
    assert R.scan_finding(scan(25), {"attn": [0]}, 9, EV).startswith("Zeroing one component")
    text = R.scan_finding(scan(25, scale=0.5), {"attn": [0]}, 9, EV)
    assert text.startswith("Scaling by 0.5 one component") and "Zeroing" not in text
    with pytest.raises(ValueError, match="mixes scales"):
        R.scan_finding(scan(25).with_columns(scale=pl.Series([0.0, 0.5, 0.0, 0.0])), {"attn": [0]}, 9, EV)


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
        "delta_acc": -0.01,
        "delta_acc_lo": -0.03,
        "delta_acc_hi": 0.01,
        "bt_pairs": pairs,
        "bt_pair_problems": problems,
    }


def sweep(pairs: int, problems: int) -> dict:
    base = cell("baseline", 1.0, 6, 0, 0)
    late = cell("late", 0.0, 1, pairs, problems)
    best = best_tradeoff([base, late], base, 0.5, EV)
    return {"baseline": base, "subset": [base, late], "scale": [late], "best_tradeoff": best}


def test_sweep_finding_needs_pairs_with_events():
    few = R.sweep_finding(sweep(3, 2), EV)
    assert "excludes 0" not in few and "(too few to test: 3 pairs with a BT event from 2 problems)" in few
    assert (
        "Best trade-off (rule: among ablated cells (scale != 1) whose paired BT change is a reduction" in few
    )
    assert "from >= 5 pairs with a BT event in >= 2 problems" in few and "floor 1.0%" in few
    assert "none, no ablated cell qualifies (subset=late,scale=0.0: too few to test: 3 pairs" in few
    enough = R.sweep_finding(sweep(12, 6), EV)
    assert "too few" not in enough
    assert (
        "late (2 components): BT 1.0% (1/96), paired change -5.0 points [-8.0, -2.0] (a reduction: the "
        "interval excludes 0; 12 pairs with a BT event from 6 problems), accuracy 2.0% (paired change "
        "-1.0 points [-3.0, 1.0])" in enough
    )
    assert (
        "subset=late,scale=0.0 cuts BT by 83.3% (relative; paired change -5.0 points [-8.0, -2.0], 12 "
        in enough
    )


def test_best_tradeoff_never_picks_an_increase():
    """The issue's case: a cell that RAISED BT was reported as 'cuts BT by -56.9%'; it is no trade-off."""
    base = cell("baseline", 1.0, 6, 0, 0)
    up = {**cell("up", 0.0, 9, 40, 12), "delta_bt": 0.03, "delta_bt_lo": 0.01, "delta_bt_hi": 0.05}
    flat = {**cell("flat", 0.5, 5, 40, 12), "delta_bt_lo": -0.03, "delta_bt_hi": 0.02}
    best = best_tradeoff([base, up, flat], base, 0.5, EV)
    assert best["cell"] is None and json.loads(json.dumps(best)) == best
    assert "up,scale=0.0: BT rises: paired BT change +3.0 points [1.0, 5.0]" in best["reason"]
    assert "flat,scale=0.5: paired BT change -5.0 points [-3.0, 2.0] does not exclude 0" in best["reason"]
    assert [r["cell"] for r in best["rejected"]] == ["subset=up,scale=0.0", "subset=flat,scale=0.5"]
    text = R.tradeoff_text(best)
    assert "cuts BT" not in text and "none, no ablated cell qualifies" in text


def test_best_tradeoff_rule_accuracy_floor_and_ranking():
    base = {**cell("baseline", 1.0, 12, 0, 0), "accuracy": 0.5}
    deep = {**cell("deep", 0.0, 1, 40, 12), "accuracy": 0.2}  # the biggest cut, below the floor 0.25
    mid = {**cell("mid", 0.5, 3, 40, 12), "accuracy": 0.3}
    mild = {**cell("mild", 0.9, 6, 40, 12), "accuracy": 0.45}
    same = cell("mild", 1.0, 1, 40, 12)  # scale 1 is not an ablation
    best = best_tradeoff([base, deep, mid, mild, same], base, 0.5, EV)
    assert best["cell"] == "subset=mid,scale=0.5" and best["reason"] is None
    assert best["relative_bt_reduction"] == pytest.approx(0.75) and best["accuracy_floor"] == 0.25
    assert (best["min_events"], best["min_problems"], best["min_accuracy_fraction"]) == (5, 2, 0.5)
    assert best["rejected"] == [
        {"cell": "subset=deep,scale=0.0", "why": "accuracy 20.0% is below the floor 25.0%"}
    ]
    empty = best_tradeoff([base], {**base, "bt_rate": 0.0}, 0.5, EV)
    assert empty["cell"] is None and "no BT to reduce" in empty["reason"]
    assert "has no ablated cell" in best_tradeoff([base, same], base, 0.5, EV)["reason"]


def test_readers_do_not_fall_back_to_old_spellings():
    """A table under an old column name is an error that names the missing column."""
    old_lens = lens(30, 4.5).rename({"mean_target_logit_bt_lo": "ci_low_bt"})
    with pytest.raises((KeyError, pl.exceptions.ColumnNotFoundError), match="mean_target_logit_bt_lo"):
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


def test_scale_finding_claims_directions_only_from_paired_intervals():
    rows = [cell("late", s, bt, 0, 0) for s, bt in ((0.0, 0), (0.5, 1), (1.0, 1))]
    text = R.scale_finding({"scale": rows}, EV)
    assert "excludes 0" not in text and text.count("too few to test: 0 pairs with a BT event") == 3
    # rising point estimates are not read as a dose-response
    rows = [
        cell("late", 0.0, 1, 30, 10),
        {**cell("late", 0.5, 4, 30, 10), "delta_bt_lo": -0.04, "delta_bt_hi": 0.01},
        {**cell("late", 0.9, 5, 3, 2), "delta_bt_lo": -0.04, "delta_bt_hi": 0.01},
    ]
    text = R.scale_finding({"scale": rows}, EV)
    assert "non-decreasing" not in text and "not monotone" not in text
    assert "No dose-response (monotone trend) is claimed" in text
    assert (
        "0 -> BT 1.0% (1/96), paired change -5.0 points [-8.0, -2.0] (a reduction: the interval excludes 0; "
        "30 pairs with a BT event from 10 problems)" in text
    )
    assert "0.5 -> BT 4.2% (4/96), paired change -5.0 points [-4.0, 1.0] (the interval includes 0" in text
    assert "0.9 -> BT 5.2% (5/96), paired change -5.0 points [-4.0, 1.0] (too few to test: 3 pairs" in text
    assert "Accuracy by scale (paired change): 0 -> 2.0% (-1.0 points [-3.0, 1.0])" in text


def _condition_view() -> pl.DataFrame:
    """20 problems x 2 samples per condition: targeted never backtracks, random like the baseline."""
    rows = []
    for cond, bt in (("baseline", lambda e, s: e % 2 == 0), ("targeted", lambda e, s: False)):
        rows += [(cond, e, s, bt(e, s), s == 0) for e in range(20) for s in range(2)]
    rows += [
        ("random", e, s, e % 2 == 0 if s == 0 else e % 4 == 0, s == 0) for e in range(20) for s in range(2)
    ]
    return pl.DataFrame(
        rows,
        schema=["condition", "example_id", "sample_id", "has_backtracking_strict", "is_correct"],
        orient="row",
    )


def test_condition_finding_cites_intervals_and_counts():
    from bt_assets.lib.rates import group_rates

    view = _condition_view()
    rates = group_rates(view, "condition", ["baseline", "targeted", "random"])
    text = R.condition_finding(rates, view, EV, seed=42)
    assert (
        "Against the baseline (BT 50.0% = 20/40, accuracy 50.0% = 20/40; changes with 95% bootstrap" in text
    )
    assert "targeted: BT 0.0% (0/40), -50.0 points [" in text
    assert "(a reduction: the interval excludes 0; 20 BT completions from 10 problems)" in text
    assert "accuracy 50.0% (20/40), +0.0 points [0.0, 0.0] (no usable interval" in text
    assert "random: BT 37.5% (15/40), -12.5 points [" in text
    assert text == R.condition_finding(rates, view, EV, seed=42)  # seeded
    few = R.condition_finding(rates, view, Evidence(min_events=100, min_problems=2), seed=42)
    assert "excludes" not in few and "too few to test: 20 BT completions from 10 problems" in few
