"""10,000 seeded nasty completions through detection and grading, both modes each: nothing raises, the
outputs have the right types and obey their invariants, and no single input is pathologically slow."""

from __future__ import annotations

import random
import time

import pytest

from bt_assets.lib.detect import Onset, detect, onset_fields
from bt_assets.lib.grading import Grade, grade, normalize

N_CASES = 10_000
MODES = ("seed_compatible", "corrected")
STRICT = ["Wait", "Actually", "Hold on"]
RELAXED = [*STRICT, "Let me check", "Let's check", "I was wrong", "mistake"]
ODD_TRIGGERS = [["wait", "(", "a.b", "\\", "[x]", "Wait*"], ["Ünïcödé", "Hold\non", "  "], ["$", "^", "|"]]
REGEXES = [None, None, None, r"ANS=(\d+)", r"Final: (.*)", r"\d+", r"(x)?y", r"(?i)answer[:\s]*(\S+)"]

FRAGMENTS = [
    # answer markers, placeholders and their look-alikes
    "Final:",
    "Final: ",
    "final answer:",
    "**Final Answer:**",
    "FINAL：",
    "Final: <answer>",
    "answer is",
    "Answer: ",
    "answer=",
    "<answer>",
    "</answer>",
    "<answer></answer>",
    "\\boxed{",
    "\\fbox{",
    "\\boxed {",
    "}",
    "{",
    "\\frac{",
    "\\dfrac{1}{0}",
    "\\text{",
    "\\(",
    "\\)",
    "$",
    "€",
    "[",
    "]",
    "<",
    ">",
    "*",
    "_",
    "`",
    # numbers: huge, tiny, malformed, grouped, signed, non-ASCII digits
    "0",
    "-0",
    "007",
    "1,234",
    "1,23,4",
    ",000",
    "3/4",
    "1/0",
    "0/0",
    "-5",
    "+5",
    "1e999",
    "1E-99999",
    "1e99999999999999999999",
    "inf",
    "-inf",
    "NaN",
    "9" * 400,
    "9" * 4500,
    "1" + "0" * 4400 + "/3",
    "0." + "0" * 300 + "1",
    "١٢٣",
    "１２３",
    "²",
    "½",
    "1.2.3",
    "12.",
    ".5",
    # triggers in every casing and position
    "Wait",
    "wait",
    "WAIT",
    " Wait,",
    "\nWait",
    ". Wait",
    "**Wait**",
    "Actually",
    "actually",
    "Hold on",
    "hold on",
    "Let me check",
    "Let's check",
    "I was wrong",
    "mistake",
    "Mistake",
    "Waiting",
    "Await",
    # whitespace, controls and unicode oddities
    " ",
    "\n",
    "\n\n",
    "\t",
    "\r\n",
    "\x00",
    "\x1b[31m",
    "\u200b",
    "\u200f",
    "\u2028",
    "\ufeff",
    "\ufffd",
    "é",
    "e\u0301",
    "😀",
    "👨‍👩‍👧",
    "中文",
    "עברית",
    "\ud800",
    ".",
    "!",
    "?",
    ":",
    ";",
    "-",
    "=",
    "/",
    "is",
    "so",
]


def _piece(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.70:
        return rng.choice(FRAGMENTS)
    if r < 0.80:
        return str(rng.randint(-(10**12), 10**12))
    if r < 0.85:
        return repr(rng.uniform(-1e6, 1e6))
    if r < 0.95:
        return "".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(1, 6)))
    return rng.choice(FRAGMENTS) * rng.randint(2, 60)  # spam: "Final:Final:...", "{{{{", ...


def _completion(rng: random.Random, i: int) -> str:
    """Case ``i``: mostly short mixes of fragments, every 100th a long adversarial text."""
    if i % 100 == 0:
        kind = (i // 100) % 6
        n = rng.randint(2_000, 6_000)
        return [
            "\\boxed{" * n + "7" + "}" * (n // 2),  # deep, partly unclosed nesting
            "Final: " * n + "42",  # marker spam
            "<answer>" * n + "3",  # unclosed tags
            "9" * (n * 4),  # a 24k-digit number
            ("Wait, " + "x" * 50 + ".\n") * (n // 20),  # many onsets
            "".join(rng.choice(FRAGMENTS) for _ in range(n)),  # a long mix
        ][kind]
    return "".join(_piece(rng) for _ in range(rng.randint(0, 25)))


def _gold(rng: random.Random) -> str | None:
    return rng.choice([None, "42", "7", "1,234", "0.5", "3/4", "-5", "1e999", "9" * 400, "", "abc", "١٢٣"])


def _check_onset(text: str, onset: Onset) -> None:
    assert isinstance(onset, Onset)
    assert isinstance(onset.has_strict, bool) and isinstance(onset.has_relaxed, bool)
    assert isinstance(onset.phrase, str) and isinstance(onset.char, int)
    assert (onset.char == -1) == (onset.phrase == "") == (not onset.has_relaxed and not onset.has_strict)
    if onset.char >= 0:
        assert text[onset.char : onset.char + len(onset.phrase)] == onset.phrase


def _check_grade(g: Grade, gold: str | None) -> None:
    assert isinstance(g, Grade)
    assert g.prediction is None or isinstance(g.prediction, str)
    assert g.correct in (True, False, None) and (g.correct is None or isinstance(g.correct, bool))
    if g.prediction is None or gold is None:
        assert g.correct is None


def test_ten_thousand_nasty_completions():
    rng = random.Random(20240607)
    slowest = (0.0, -1)
    t_all = time.perf_counter()
    for i in range(N_CASES):
        text, gold = _completion(rng, i), _gold(rng)
        regex = rng.choice(REGEXES)
        triggers = rng.choice(ODD_TRIGGERS) if i % 50 == 1 else None
        t0 = time.perf_counter()
        for mode in MODES:
            strict, relaxed = (triggers, triggers) if triggers else (STRICT, RELAXED)
            onset = detect(text, strict, relaxed, mode)
            _check_onset(text, onset)
            if triggers is None:  # the default relaxed list contains the strict one
                assert onset.has_relaxed or not onset.has_strict
            g = grade(text, gold, mode, regex)
            _check_grade(g, gold)
            if g.prediction is not None:
                assert isinstance(normalize(g.prediction, mode), str)
        slowest = max(slowest, (time.perf_counter() - t0, i))
    total = time.perf_counter() - t_all
    assert slowest[0] < 2.0, f"case {slowest[1]} took {slowest[0]:.2f}s"
    assert total < 60, f"{N_CASES} cases took {total:.1f}s"


@pytest.mark.slow  # the demo tokenizer is read from the GGUF model file (seconds)
@pytest.mark.parametrize("add_bos", [True, False])
def test_onset_fields_on_nasty_completions(demo_tokenizer, add_bos):
    """Token positions of fuzzed onsets: consistent and never raising (300 cases per BOS setting: the
    tokenizer is the slow part)."""
    rng = random.Random(7 + add_bos)
    prompt = "Solve it.\nEnd with a single line: Final: <answer>\n\nProblem: 2 + 2?\n"
    for i in range(1, 301):
        # lone surrogates cannot come out of tokenizer.decode (and the Rust tokenizer rejects them)
        text = _completion(rng, i).replace("\ud800", "\ufffd")
        for mode in MODES:
            onset = detect(text, STRICT, RELAXED, mode)
            f = onset_fields(demo_tokenizer, prompt, text, onset, add_bos, prepend_missing_bos=add_bos)
            assert set(f) == {
                "onset_token_in_completion",
                "onset_token_in_full",
                "onset_token_id",
                "onset_token_text",
                "pred_pos_in_full",
            }
            assert isinstance(f["onset_token_text"], str)
            if onset.char < 0:
                assert f["onset_token_in_full"] == -1 and f["onset_token_id"] == -1
            elif f["onset_token_in_full"] >= 0:
                assert f["onset_token_id"] >= 0 and f["onset_token_in_completion"] >= 0
                assert f["pred_pos_in_full"] == max(f["onset_token_in_full"] - 1, 0)
