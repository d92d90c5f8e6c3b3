"""Backtracking detection (seed-compatible and corrected) and the onset token arithmetic."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest

from bt_assets.lib.detect import NO_ONSET, Onset, detect, encode_with_offsets, onset_fields, onset_token

STRICT = ["Wait", "Actually", "Hold on"]
RELAXED = [*STRICT, "Let me check", "Let's check", "I was wrong", "mistake"]
SEED, CORR = "seed_compatible", "corrected"
FIXTURE = Path(__file__).parent / "fixtures" / "phase1_run" / "backtracking_events.csv"


def test_wait_no_is_strict_in_both_modes():
    for mode in (SEED, CORR):
        assert detect("Wait, no. 5 + 3 = 8.", STRICT, RELAXED, mode) == Onset(True, True, "Wait", 0)


def test_verb_wait_counts_only_in_seed_mode():
    text = "I'll wait for the bus."
    assert detect(text, STRICT, RELAXED, SEED) == Onset(True, True, "wait", 5)
    assert detect(text, STRICT, RELAXED, CORR) == Onset(False, False, "", -1)


@pytest.mark.parametrize(
    ("text", "phrase", "char"),
    [
        ("Hmm, wait. So", "wait", 5),
        ("x = 8. But wait, the tax.", "wait", 11),
        ("Oh wait, no. 7.", "wait", 3),
        ("No, wait, 5 + 3 = 8.", "wait", 4),
        ("So 9. Oh no, wait: 8.", "wait", 13),
        ("Okay, so wait, is it 4?", "wait", 9),
        ("Hmm, hold on. 4.", "hold on", 5),
        ("Actually wait, 4.", "Actually", 0),  # the interjection is itself a trigger: the earlier one wins
        ("so it is 9, wait, no, 8", "wait", 12),
        ("so it is 9... wait, 8", "wait", 14),
        ("so 9 but wait, 8", "wait", 9),
        ("so 9 (wait, 8)", "wait", 6),
        ("so 9 - wait - 8", "wait", 7),
        ("12 \u2014 wait, 21", "wait", 5),
        ("so 9, hmm, wait I see, 8", "wait", 11),  # behind an interjection no pause is needed
        ("x. wait, 8", "wait", 3),
        ("x. WAIT. 8", "WAIT", 3),
        ("Wait a second, 8.", "Wait", 0),
        ("so 9, wait a minute, 8.", "wait", 6),
        ("x.\n_Wait_, 8", "Wait", 4),  # markdown italics: "_" is not a word character here
        ("x.\n***wait***, 8", "wait", 6),
    ],
)
def test_corrected_interjections_and_clause_markers(text, phrase, char):
    assert detect(text, STRICT, RELAXED, CORR) == Onset(True, True, phrase, char)


@pytest.mark.parametrize(
    "text",
    [
        "We wait for the bus.",
        "They wait, and the bus comes.",
        "The longer you wait, the more you earn.",
        "Wait times average 12 minutes.",
        "Wait time: 18 minutes.",
        "Wait-time total: 21 minutes.",
        "Wait staff earn $4 an hour.",
        "The recipe says: Wait 5 minutes.",
        "The label says: Wait three days, then water.",
        "Note: wait until the glue dries.",
        "Hold on to the receipt.",
        "So hold on tight, 3 minutes.",
        "There is no wait.",
        "she planned $60 but actually spent $48",
        "who actually attended",
        "They sit, and wait, for hours.",
        "so 9, wait for it",
        "the total is 96 wait, 69",  # no clause opening before the marker: a known miss
    ],
)
def test_corrected_ignores_the_verb_and_the_noun(text):
    assert detect(text, STRICT, RELAXED, CORR).has_strict is False


def test_mistake_mention_counts_only_in_seed_mode():
    text = "A common mistake is to add."
    assert detect(text, STRICT, RELAXED, SEED) == Onset(False, True, "mistake", 9)
    assert detect(text, STRICT, RELAXED, CORR) == Onset(False, False, "", -1)
    assert detect("\nMistake: none", STRICT, RELAXED, CORR).has_relaxed is False


def test_earliest_match_wins_and_casing_is_kept():
    text = "so actually 4. Then WAIT. Wait"
    for mode in (SEED, CORR):  # "so" is an interjection that opens the clause of "actually"
        assert detect(text, STRICT, RELAXED, mode) == Onset(True, True, "actually", 3)
    text = "I'll wait. Then WAIT. Wait"
    assert detect(text, STRICT, RELAXED, SEED) == Onset(True, True, "wait", 5)
    assert detect(text, STRICT, RELAXED, CORR) == Onset(True, True, "Wait", 22)
    assert detect("x. WAIT, no", STRICT, RELAXED, CORR) == Onset(True, True, "WAIT", 3)


def test_strict_onset_beats_an_earlier_relaxed_match():
    text = "Let me check: 3. Wait, 4."
    for mode in (SEED, CORR):
        assert detect(text, STRICT, RELAXED, mode) == Onset(True, True, "Wait", 17)
    assert detect("x. Let me check it", STRICT, RELAXED, CORR) == Onset(False, True, "Let me check", 3)
    assert detect("x. I was wrong", STRICT, RELAXED, CORR) == Onset(False, True, "I was wrong", 3)
    assert detect("so let me check", STRICT, RELAXED, SEED) == Onset(False, True, "let me check", 3)
    assert detect("so let me check", STRICT, RELAXED, CORR) == Onset(False, True, "let me check", 3)
    assert detect("he did not let me check it", STRICT, RELAXED, CORR).has_relaxed is False


@pytest.mark.parametrize(
    ("text", "char"),
    [
        ("Wait", 0),
        ("  Wait", 2),
        ("x.\n**Wait**, no", 5),
        ("x. (Wait", 4),
        ('x! "Wait', 4),
        ("So: Wait", 4),
        ("a; Hold on", 3),
        ("- x\n- Actually", 6),
        ("x?\n\n> Wait", 6),
    ],
)
def test_corrected_clause_starts(text, char):
    onset = detect(text, STRICT, RELAXED, CORR)
    assert onset.has_strict and onset.char == char


def test_word_boundaries():
    for mode in (SEED, CORR):
        assert detect("Waiting. Actuallyness", STRICT, RELAXED, mode).has_relaxed is False
    assert detect("x.Wait", STRICT, RELAXED, CORR).has_strict is True


def test_empty_trigger_lists():
    assert detect("Wait", [], [], SEED) == Onset(False, False, "", -1)


# --- char -> token ---------------------------------------------------------------------------------


def test_onset_token_rules():
    offs = [(0, 0), (0, 5), (5, 11), (11, 12), (14, 17)]
    assert onset_token(offs, 0, skip_first_if_bos=True) == 1
    assert onset_token(offs, 0, skip_first_if_bos=False) == 0  # (0,0) starts at 0
    assert onset_token(offs, 5, True) == 2  # starts exactly at
    assert onset_token(offs, 7, True) == 2  # contained
    assert onset_token(offs, 12, True, text_len=17) == -1  # in a gap, not at the end
    assert onset_token(offs, 16, True, text_len=17) == 4
    assert onset_token(offs, 30, True, text_len=17) == 4  # at/after the last char -> last token
    assert onset_token([], 3, True) == -1


@pytest.fixture(scope="module")
def prompt() -> str:
    return (
        "Solve the problem carefully.\nEnd with a single line: Final: <answer>\n\n"
        "Problem: add two and three.\n"
    )


@pytest.mark.slow  # the demo tokenizer is read from the GGUF model file (seconds)
def test_onset_fields_arithmetic(demo_tokenizer, prompt):
    completion = "Two plus three is five. Wait, let me recheck: 2 + 3 = 5.\nFinal: 5"
    onset = detect(completion, STRICT, RELAXED, SEED)
    f = onset_fields(demo_tokenizer, prompt, completion, onset, add_bos=True)
    n_prompt = len(demo_tokenizer(prompt, add_special_tokens=True)["input_ids"])
    full_ids = demo_tokenizer(prompt + completion, add_special_tokens=True)["input_ids"]
    assert f["onset_token_in_full"] - f["onset_token_in_completion"] == n_prompt
    assert f["pred_pos_in_full"] == f["onset_token_in_full"] - 1
    assert f["onset_token_id"] == full_ids[f["onset_token_in_full"]]
    assert f["onset_token_text"] == " Wait"
    # the completion tokens before the onset decode to the text before the onset
    before = demo_tokenizer.decode(full_ids[n_prompt : f["onset_token_in_full"]])
    assert before == completion[: onset.char].rstrip(" ")


@pytest.mark.slow
def test_onset_fields_with_prepended_bos(demo_tokenizer, prompt):
    completion = "Hmm. Wait, five."
    onset = detect(completion, STRICT, RELAXED, SEED)
    plain = onset_fields(demo_tokenizer, prompt, completion, onset, add_bos=True)
    assert demo_tokenizer("x")["input_ids"][0] != demo_tokenizer.bos_token_id  # demo adds no BOS itself
    bos = onset_fields(demo_tokenizer, prompt, completion, onset, add_bos=True, prepend_missing_bos=True)
    assert bos["onset_token_in_full"] == plain["onset_token_in_full"] + 1
    assert bos["onset_token_in_completion"] == plain["onset_token_in_completion"]
    assert bos["pred_pos_in_full"] == bos["onset_token_in_full"] - 1
    assert bos["onset_token_id"] == plain["onset_token_id"]
    ids, offs, has_bos = encode_with_offsets(demo_tokenizer, prompt, True, prepend_missing_bos=True)
    assert has_bos and ids[0] == demo_tokenizer.bos_token_id and offs[0] == (0, 0)
    ids, _, has_bos = encode_with_offsets(demo_tokenizer, prompt, False, prepend_missing_bos=True)
    assert not has_bos and ids[0] != demo_tokenizer.bos_token_id


@pytest.mark.slow
def test_onset_fields_at_completion_start_and_none(demo_tokenizer, prompt):
    onset = detect("Wait. 5", STRICT, RELAXED, SEED)
    f = onset_fields(demo_tokenizer, prompt, "Wait. 5", onset, add_bos=False)
    n_prompt = len(demo_tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert (f["onset_token_in_completion"], f["onset_token_in_full"]) == (0, n_prompt)
    assert f["onset_token_text"] == "Wait"
    # a token that straddles the prompt/completion boundary is clamped to completion index 0
    wait = detect("Wait", STRICT, RELAXED, SEED)
    g = onset_fields(demo_tokenizer, "Problem: x ", "Wait", wait, add_bos=False)
    assert g["onset_token_in_completion"] == 0 and g["onset_token_text"].strip() == "Wait"
    none = onset_fields(demo_tokenizer, prompt, "no backtracking", detect("x", STRICT, RELAXED, SEED), True)
    assert none == NO_ONSET


# --- consistency with the original's events (completions are not in the fixture) ------------------


def test_fixture_onsets_are_consistent_with_seed_detection():
    """Every stored onset phrase is detected by the seed rules with the stored flags, and the stored
    token fields obey the spec 2.1 arithmetic."""
    with open(FIXTURE, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6000
    n_strict = 0
    for r in rows:
        strict, relaxed = r["has_backtracking_strict"] == "True", r["has_backtracking_relaxed"] == "True"
        assert relaxed or not strict  # relaxed is a superset of strict
        if not r["onset_phrase"]:
            assert not relaxed and r["onset_char"] == "-1" and r["pred_pos_in_full"] == "-1"
            continue
        onset = detect(r["onset_phrase"], STRICT, RELAXED, SEED)
        assert (onset.has_strict, onset.has_relaxed, onset.phrase) == (strict, True, r["onset_phrase"])
        full, comp = int(r["onset_token_in_full"]), int(r["onset_token_in_completion"])
        assert int(r["pred_pos_in_full"]) == full - 1
        if strict:
            n_strict += 1
            assert full - comp == int(r["prompt_tokens"])
    assert n_strict == 3145


@pytest.mark.parametrize(
    "text", ["Hmm, so, no, oh, " * 2500, "( " * 20000, "- " * 20000, ". " + "hmm, " * 8000 + "wait 5"]
)
def test_corrected_search_stays_linear(text):
    """Runs of interjections or decoration (each one a clause opening) must not make a search quadratic."""
    t0 = time.perf_counter()
    detect(text, STRICT, RELAXED, CORR)
    assert time.perf_counter() - t0 < 2.0
