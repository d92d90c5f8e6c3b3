"""Onset resamples (issue 13, item 9): continuations from the prefix before a BT onset, clean and with
the subset scaled for the first k decode steps only, paired by sampling keys; their summary (stability,
paired change with a problem-clustered interval, phrases, accuracy among finished) and finding."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from bt_assets.lib import onset_resample as R
from bt_assets.lib.hooks import HookState
from bt_assets.lib.report_onsets import resample_finding
from bt_assets.lib.stats import Evidence
from bt_assets_tests.conftest import EOS_ID, tiny_model

EVIDENCE = Evidence(min_events=5, min_problems=2)


def _spec(**kw) -> R.ResampleSpec:
    base = dict(
        samples=3, components=(("mlp", 1), ("attn", 2)), scale=0.0, first_k_steps=1, window_tokens=4,
        max_new_tokens=6, temperature=1.0, top_p=0.95, top_k=0, seed=5,
    )  # fmt: skip
    return R.ResampleSpec(**{**base, **kw})


def _event(key: str = "v/3/0") -> R.ResampleEvent:
    ids = tuple(int(i) for i in torch.randint(3, 49152, (14,), generator=torch.Generator().manual_seed(2)))
    return R.ResampleEvent(key, 3, ids, pred_pos=11, prompt_len=5, gold="7")


@pytest.fixture(scope="module")
def model():
    return tiny_model("qwen2", seed=3)


@pytest.mark.slow
def test_scale_one_gives_the_clean_rows_token_for_token(model):
    rows = R.continuations(model, _event(), _spec(scale=1.0), [EOS_ID])
    assert rows[:3] == rows[3:]  # sample s of both conditions shares its uniforms: the pairs are exact
    assert len({tuple(r) for r in rows[:3]}) > 1  # the samples differ from one another


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 3])
def test_the_subset_is_scaled_for_the_first_k_steps_only(model, monkeypatch, k):
    states: list[HookState] = []

    def spy(**kw) -> HookState:
        states.append(HookState(**kw))
        return states[-1]

    monkeypatch.setattr(R, "HookState", spy)
    rows = R.continuations(model, _event(), _spec(first_k_steps=k), [EOS_ID])
    (state,) = states
    steps = max(len(r) for r in rows)
    assert state.counts[("teacher", "mlp", 1)] == steps  # the hook runs at every step ...
    assert state.applied[("teacher", "mlp", 1)] == k  # ... and scales only at the first k
    assert state.cell_counts[(0, "teacher", "mlp", 1, "applied")] == 0  # never in the clean rows
    assert rows[3:] != rows[:3]  # zeroing two components at the onset step changes the continuations


@pytest.mark.slow
def test_rows_are_scored_per_condition(model):
    spec = _spec()
    rows = R.continuations(model, _event(), spec, [EOS_ID])

    def detect(text: str) -> tuple[bool, str]:
        return ("e" in text, "e")

    df = R.score_rows(_event(), rows, spec, lambda ids: "x" * len(ids), detect, lambda t, g: None, [EOS_ID])
    assert [r["condition"] for r in df] == ["clean"] * 3 + ["ablated"] * 3
    assert [r["sample"] for r in df] == [0, 1, 2] * 2
    assert all(r["new_tokens"] == len(ids) for r, ids in zip(df, rows, strict=True))


def _frame(clean: list[bool], ablated: list[bool], problems: list[int]) -> pl.DataFrame:
    rows = []
    for cond, hits in (("clean", clean), ("ablated", ablated)):
        for i, (hit, p) in enumerate(zip(hits, problems, strict=True)):
            rows.append(
                {
                    "event": f"v/{p}/{i}", "example_id": p, "condition": cond, "sample": 0, "new_tokens": 8,
                    "bt_in_window": hit, "bt_phrase": "Wait" if hit else None,
                    "first_phrase": "Wait" if hit else "Actually", "finished": i % 2 == 0,
                    "is_correct": (i % 4 == 0) if i % 2 == 0 else None, "continuation": "",
                }
            )  # fmt: skip
    return pl.DataFrame(rows, schema=R.RESAMPLE_SCHEMA)


def test_summary_gives_stability_and_the_paired_change():
    problems = [p for p in range(8) for _ in range(3)]
    clean = [True] * 20 + [False] * 4
    ablated = [i % 4 == 0 for i in range(24)]
    s = R.resample_summary(_frame(clean, ablated, problems), seed=0)
    c, a, pair = s["conditions"]["clean"], s["conditions"]["ablated"], s["paired"]
    assert s["stability"] == c["bt_rate"] == pytest.approx(20 / 24)
    assert a["bt_rate"] == pytest.approx(6 / 24) and c["n_problems"] == 8
    assert pair["delta_bt"] == pytest.approx(6 / 24 - 20 / 24) and pair["n_pairs"] == 24
    assert pair["delta_bt_hi"] < 0 < c["bt_rate_lo"]
    assert c["n_finished"] == 12 and c["accuracy_finished"] == pytest.approx(0.5)
    assert a["first_phrases"].startswith("Actually 18")
    text = resample_finding(s, EVIDENCE, 1, 16)
    assert "a reduction: the interval excludes 0" in text and "(the onsets' stability)" in text
    ci = f"[{100 * c['accuracy_finished_lo']:.1f}, {100 * c['accuracy_finished_hi']:.1f}]%"
    assert f"clean 50.0% {ci} of 12" in text  # pooled over problems: with its clustered interval
    few = resample_finding(s, Evidence(min_events=100, min_problems=2), 1, 16)
    assert "too few to test" in few and "a reduction" not in few
    stab = R.event_stability(_frame(clean, ablated, problems))
    assert stab.height == 24 and set(stab["stability"]) == {0.0, 1.0}


def test_empty_resamples_say_so():
    assert resample_finding(
        R.resample_summary(pl.DataFrame(schema=R.RESAMPLE_SCHEMA), 0), EVIDENCE, 1, 16
    ) == ("No BT events were resampled.")


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (
            "phase2:\n  onset_resamples: {subset: nope}\n",
            "phase2.onset_resamples.subset: unknown subset 'nope'",
        ),
        ("phase2:\n  onset_resamples: {subset: top_mlp, window_tokens: 99}\n", "window_tokens (99) exceeds"),
        ("phase2:\n  onset_resamples: {subset: top_mlp, samples: 0}\n", "phase2.onset_resamples.samples"),
        ("phase2:\n  onset_resamples: {subset: top_mlp, scale: 2.0}\n", "phase2.onset_resamples.scale"),
        (
            "phase2:\n  onset_resamples: null\n  continuation: {subset: top_mlp, min_onset_stability: 0.5}\n",
            "phase2.continuation.min_onset_stability: needs phase2.onset_resamples",
        ),
    ],
)
def test_bad_resample_settings_fail_naming_the_key(tmp_path, body, key):
    from bt_assets_tests.test_config_fuzz import fails

    assert key in fails(tmp_path, body)
