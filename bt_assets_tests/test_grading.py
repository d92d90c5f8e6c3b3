"""Grader: the original's behaviour (seed_compatible) on every bug case of the spec, and the fixes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bt_assets.lib.grading import Grade, answers_equal, extract_answer, grade, normalize

SEED, CORR = "seed_compatible", "corrected"
ECHO = "Solve it.\nEnd with a single line: Final: <answer>\n"


# --- B1: boxed answers ------------------------------------------------------------------------------


def test_b1_boxed_answer_in_final_line():
    text = "reasoning...\nFinal: ** \\(\\boxed{621}\\)\n"
    assert grade(text, "621", SEED) == Grade("** \\(\\boxed{621}\\)", False)
    assert grade(text, "621", CORR) == Grade("621", True)


def test_boxed_nested_braces_and_last_wins():
    assert extract_answer("\\boxed{3} then \\boxed{{4}}", CORR) == "4"
    assert extract_answer("\\boxed{\\text{18}} dollars", CORR) == "18"
    assert grade("\\boxed{\\frac{3}{4}}", "0.75", CORR).correct is True
    assert grade("\\boxed{\\dfrac{1}{2}}", "0.5", CORR).correct is True
    assert extract_answer("\\boxed{12", CORR) == "12"  # unclosed: falls back to the last number


# --- B2: first "Final:" wins -> instruction echo ---------------------------------------------------


def test_b2_echoed_instruction_then_real_final():
    text = ECHO + "Let me compute 40 + 2.\nFinal: 42"
    assert grade(text, "42", SEED) == Grade("answer", False)
    assert grade(text, "42", CORR) == Grade("42", True)


def test_b2_last_final_line_wins_and_placeholder_ignored():
    assert extract_answer("Final: 3\nno, redo\nFinal: 4", SEED) == "3"
    assert extract_answer("Final: 3\nno, redo\nFinal: 4", CORR) == "4"
    assert extract_answer("Final: <answer>\nso the result is 17", CORR) == "17"
    assert extract_answer("Final: [answer]", CORR) is None
    assert extract_answer("**Final Answer:** 9", CORR) == "9"
    assert extract_answer("Final:\n\n  42\n", CORR) == "42"


def test_answer_tags():
    text = "<answer>621</answer>"
    assert grade(text, "621", CORR) == Grade("621", True)
    assert grade("work\n<answer>\n300 miles\n</answer>", "300", CORR).correct is True
    # the original's "answer" pattern eats the tag into the prediction (B2: "answer621/answer")
    assert extract_answer("Final: <answer>621</answer>", SEED) == "answer621/answer"
    assert grade("Final: <answer>621</answer>", "621", CORR).correct is True


def test_empty_final_line_gives_empty_prediction_in_seed_mode():
    # spec 2.2: one original row has an empty-string prediction graded False
    assert grade("Final: <>\n", "5", SEED) == Grade("", False)
    assert grade("Final: <>\n", "5", CORR) == Grade(None, None)


# --- B3: no numeric extraction inside the captured line --------------------------------------------


@pytest.mark.parametrize(
    ("line", "gold", "corrected"),
    [
        ("should be 621.", "621", "621"),
        ("** $14.00", "14", "14.00"),
        ("Mark makes 7500 cents a day.", "7500", "7500"),
        ("Mark makes 7,500 cents a day.", "7500", "7500"),
        ("is $800.", "800", "800"),
    ],
)
def test_b3_number_inside_captured_line(line, gold, corrected):
    text = f"work\nFinal: {line}\n"
    assert grade(text, gold, SEED) == Grade(line, False)
    assert grade(text, gold, CORR) == Grade(corrected, True)


def test_answer_is_phrase():
    assert grade("so the answer is 18.", "18", SEED) == Grade("is 18.", False)
    assert grade("so the answer is 18.", "18", CORR) == Grade("18", True)


# --- B4: last-number fallback splits long integers -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seed_pred", "corr_pred"),
    [
        ("so the total is 7500", "0", "7500"),
        ("we get 12345 apples", "45", "12345"),
        ("that is 1,234,567.5 in all", "1234567.5", "1234567.5"),
        ("it costs 276,000 dollars", "276000", "276000"),
    ],
)
def test_b4_last_number_fallback(text, seed_pred, corr_pred):
    assert extract_answer(text, SEED) == seed_pred
    assert extract_answer(text, CORR) == corr_pred


def test_b4_split_suffix_is_graded_wrong_only_in_seed_mode():
    assert grade("total 7500", "7500", SEED).correct is False
    assert grade("total 7500", "7500", CORR).correct is True


def test_no_number_no_marker_is_unknown():
    for mode in (SEED, CORR):
        assert grade("no digits here", "5", mode) == Grade(None, None)
        assert grade("Final: 5", None, mode).correct is None


# --- B17: huge degenerate numbers never raise ------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "9" * 400,
        "1e999",
        "inf",
        "-inf",
        "INF",
        "nan",
        "1e99999999999999999999",
        "9" * 5000,
        "1.5e-9999",
        "1" + "0" * 4500 + "/3",
    ],
)
def test_b17_huge_numbers_never_raise(value):
    for mode in (SEED, CORR):
        g = grade(f"Final: {value}\n", "42", mode)
        assert g.correct is False
        assert isinstance(normalize(value, mode), str)


def test_b17_seed_mode_returns_lowercased_string_for_infinite_floats():
    # the Phase-1 code raised OverflowError here; the original's fix (and spec 2.2) lower-cases
    assert normalize("9" * 400, SEED) == "9" * 400
    assert normalize("1E999", SEED) == "1e999"
    assert normalize("-INF", SEED) == "-inf"
    assert normalize("NaN", SEED) == "nan"


def test_corrected_compares_huge_numbers_exactly():
    assert answers_equal("1e999", "1" + "0" * 999, CORR) is True
    assert answers_equal("9" * 400, "9" * 400, CORR) is True
    assert answers_equal("9" * 400, "9" * 399 + "8", CORR) is False
    assert answers_equal("1e5000", "1" + "0" * 5000, CORR) is True  # beyond the expansion limit


# --- normalisation and gold formats ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "seed", "corrected"),
    [
        ("14.00", "14", "14"),
        ("$1,000", "1000", "1000"),
        ("0.5", "0.5", "1/2"),
        ("1/2", "1/2", "1/2"),
        ("5.", "5", "5"),
        (" 276,000 ", "276000", "276000"),
        ("ABC", "abc", "abc"),
        ("-0", "0", "0"),
        ("1e3", "1000", "1000"),
    ],
)
def test_normalize(raw, seed, corrected):
    assert normalize(raw, SEED) == seed
    assert normalize(raw, CORR) == corrected


def test_gold_with_commas():
    assert grade("Final: 276000", "276,000", SEED).correct is True
    assert grade("Final: 276,000", "276,000", SEED).correct is True
    assert grade("Final: 276,000.00 dollars", "276,000", CORR).correct is True
    assert grade("Final: 5600", "5,600", CORR).correct is True


def test_fractions_and_decimals_numerically():
    assert answers_equal("3/4", "0.75", CORR) is True
    assert answers_equal("6/8", "3/4", CORR) is True
    assert answers_equal("14.00", "14", CORR) is True
    assert answers_equal("0.5", "1/2", SEED) is False  # the original compares float strings
    assert answers_equal("1/0", "1/0", CORR) is True  # not a number: compared as text
    assert answers_equal(None, "1", CORR) is None


def test_negative_numbers_and_ranges():
    assert extract_answer("Final: -5", CORR) == "-5"
    assert extract_answer("20-5=15", CORR) == "15"
    assert extract_answer("x = 3-4", CORR) == "4"


def test_seed_marker_precedence_and_bracket_deletion():
    assert extract_answer("The final answer: [7]", SEED) == "7"
    assert extract_answer("my answer: <12>", SEED) == "12"
    assert extract_answer("FINAL:   x\n", SEED) == "x"


def test_answer_regex():
    text = "ANS=3 ... ANS=4"
    assert extract_answer(text, SEED, r"ANS=(\d+)") == "3"
    assert extract_answer(text, CORR, r"ANS=(\d+)") == "4"
    assert extract_answer(text, SEED, r"ANS=\d+") == "ANS=3"
    assert extract_answer("nothing", SEED, r"ANS=(\d+)") is None
    assert grade(text, "4", CORR, r"ANS=(\d+)").correct is True


# --- fuzz: grade never raises ----------------------------------------------------------------------

FRAGMENTS = [
    "Final:",
    "final answer",
    "Final Answer:",
    "answer",
    "answer is",
    "<answer>",
    "</answer>",
    "\\boxed{",
    "\\fbox{",
    "{",
    "}",
    "\\frac{",
    "\\text{",
    "\n",
    " ",
    "$",
    ",",
    ".",
    "/",
    "-",
    "+",
    "e",
    "E",
    "1e999",
    "9" * 400,
    "inf",
    "nan",
    "0",
    "000",
    ",000",
    "1,234",
    "3/4",
    "[",
    "]",
    "**",
    "\\(",
    "\\)",
    ":",
    "is",
    "Wait",
    "1e-99999",
    "1e9999999999999999999999",
]
rich = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS),
        st.text(max_size=4),
        st.integers().map(str),
        st.floats(allow_nan=True).map(str),
    ),
    max_size=30,
).map("".join)
golds = st.one_of(
    st.none(),
    st.integers().map(str),
    st.integers().map(lambda n: f"{n:,}"),
    st.text(max_size=8),
    st.sampled_from(["1e999", "inf", "9" * 400, "3/4", "0.5", "276,000", ""]),
)


def _check(text: str, gold: str | None) -> None:
    for mode in (SEED, CORR):
        g = grade(text, gold, mode)
        assert g.prediction is None or isinstance(g.prediction, str)
        assert g.correct in (True, False, None)
        if gold is None or g.prediction is None:
            assert g.correct is None


@settings(max_examples=600, deadline=None)
@given(st.text(), golds)
def test_fuzz_random_text_never_raises(text, gold):
    _check(text, gold)


@settings(max_examples=600, deadline=None)
@given(rich, golds)
def test_fuzz_keyword_rich_text_never_raises(text, gold):
    _check(text, gold)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from(["{:d}", "{:,}", "${:,}.00", "\\boxed{{{:d}}}"]),
    st.text(alphabet="abc .\n", max_size=20),
)
def test_corrected_reads_any_integer_after_final(n, fmt, prefix):
    text = f"{prefix}\nFinal: {fmt.format(n)}\n"
    assert grade(text, str(n), CORR).correct is True
