"""Answer extraction and grading of a completion against a GSM8K gold answer, in two modes.

``seed_compatible`` reproduces the original grader (spec 2.2) so that the original tables can be
recomputed: the FIRST ``Final:`` / ``final answer`` / ``answer`` line, ``< > [ ]`` deleted, else the last
number of a pattern that splits long integers ("7500" -> "750", "0"); normalisation through ``float``
and string equality. The Phase-1 code raised ``OverflowError`` for infinite floats ("1e999", a
400-digit number, B17); here those inputs return the lower-cased string, exactly what the original's
later fix returns, so the seed mode equals the original wherever the original did not crash and never
raises.

``corrected`` fixes B1-B4 and B17: the LAST answer marker wins (a ``Final:`` line whose content is the
echoed placeholder ``<answer>`` is ignored), ``\\boxed{...}`` (nested braces) and ``<answer>...</answer>``
are read, a number is taken from inside the captured text (its last number: "should be 621." -> 621,
"$14.00" -> 14.00, "7,500 cents" -> 7500), long integers are never split, and numbers are compared
exactly as rationals (14.00 == 14, 0.5 == 1/2, "276,000" == 276000). Nothing raises on huge numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Literal

Mode = Literal["seed_compatible", "corrected"]


@dataclass(frozen=True)
class Grade:
    prediction: str | None
    correct: bool | None


# --------------------------------------------------------------------------------------------------
# seed_compatible (spec 2.2)

_SEED_MARKERS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"Final:\s*(.+?)(?:\n|$)",
        r"final answer[:\s]+(.+?)(?:\n|$)",
        r"answer[:\s]+(.+?)(?:\n|$)",
    )
]
_SEED_NUMBER = re.compile(r"[-+]?\d{1,3}(?:,\d{3})*(?:\.\d+)?|\d+(?:\.\d+)?")
_BRACKETS = re.compile(r"[<>\[\]]")
_CURRENCY = re.compile(r"[$€£¥]")


def _seed_extract(text: str) -> str | None:
    for pattern in _SEED_MARKERS:
        m = pattern.search(text)
        if m:
            return _BRACKETS.sub("", m.group(1).strip())
    numbers = _SEED_NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def _seed_normalize(s: str) -> str:
    s = _CURRENCY.sub("", s.strip()).replace(",", "").rstrip(".")
    try:
        x = float(s)
    except ValueError:
        return s.lower()
    if x != x or x in (float("inf"), float("-inf")):  # nan: int() fails -> lower; inf: B17 crash case
        return s.lower()
    return str(int(x)) if x == int(x) else str(x)


# --------------------------------------------------------------------------------------------------
# corrected

# A whole number: thousands groups only when every group has 3 digits, optional decimals, fraction or
# exponent. A minus sign counts when it does not follow a word character ("20-5" is not "-5").
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}])-)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+(?:\.\d+)?)?(?:[eE][+-]?\d+)?"
)
_FINAL = re.compile(r"\bfinal(?:[ \t]+answer)?[ \t*_]*[:：]", re.IGNORECASE)
_ANSWER_IS = re.compile(r"\banswer(?:[ \t]+is|[ \t]*[:=])[ \t*_]*", re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_TAG = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.IGNORECASE | re.DOTALL)
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]*?)\s*\}\s*\{\s*([^{}]*?)\s*\}")
_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}")
_PLACEHOLDERS = {"", "answer", "youranswer", "theanswer", "finalanswer", "...", "…", "x", "n"}
_NEXT_LINE = re.compile(r"\S[^\n]*")
_MAX_LINE = 1000  # an answer line longer than this is cut (keeps adversarial inputs linear)
_MAX_DIGITS = 4000  # below Python's int<->str limit (4300 digits); larger values stay symbolic strings


def _line_after(text: str, pos: int) -> str:
    """Rest of the line from ``pos``; if it is blank (``Final:\\n42``), the next non-blank line."""
    end = text.find("\n", pos, pos + _MAX_LINE)
    line = text[pos : pos + _MAX_LINE] if end < 0 else text[pos:end]
    if line.strip(" \t*_") or end < 0:
        return line
    m = _NEXT_LINE.search(text, end + 1)
    return m.group(0)[:_MAX_LINE] if m else line


def _is_placeholder(content: str) -> bool:
    return re.sub(r"[<>\[\]*_\s\\$(){}.:]", "", content).lower() in _PLACEHOLDERS


def _boxed(text: str) -> list[tuple[int, str]]:
    """(start, content) of every ``\\boxed{...}`` with balanced braces; unclosed ones are skipped."""
    starts = list(_BOXED.finditer(text))
    if not starts:
        return []
    closing, stack = {}, []
    for i, ch in enumerate(text):  # one pass: the matching "}" of every "{"
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            closing[stack.pop()] = i
    return [(m.start(), text[m.end() : closing[m.end() - 1]]) for m in starts if m.end() - 1 in closing]


def _resolve(content: str) -> str | None:
    """The answer inside a captured piece of text: last boxed content, else its last number (commas
    removed), else the cleaned text (None when nothing is left)."""
    boxed = _boxed(content)
    if boxed:
        content = boxed[-1][1]
    content = _TAG.sub(r"\1", content)
    content = _TEXT.sub(r"\1", _FRAC.sub(r"\1/\2", content))
    numbers = _NUMBER.findall(content)
    if numbers:
        return numbers[-1].replace(",", "")
    cleaned = re.sub(r"</?answer>|[*_`]|\\[()\[\]]", "", content).strip().rstrip(".").strip()
    return None if _is_placeholder(cleaned) else cleaned


def _corrected_extract(text: str) -> str | None:
    candidates: list[tuple[int, str]] = []
    for m in _FINAL.finditer(text):
        content = _line_after(text, m.end())
        if not _is_placeholder(content):
            candidates.append((m.start(), content))
    candidates += _boxed(text)
    candidates += [(m.start(), m.group(1)) for m in _TAG.finditer(text) if not _is_placeholder(m.group(1))]
    if not candidates:  # weaker markers: "the answer is 42", "Answer: 42"
        for m in _ANSWER_IS.finditer(text):
            content = _line_after(text, m.end())
            if not _is_placeholder(content):
                candidates.append((m.start(), content))
    for _, content in sorted(candidates, key=lambda c: c[0], reverse=True):
        answer = _resolve(content)
        if answer is not None:
            return answer
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def _decimal_parts(s: str) -> tuple[bool, str, int] | None:
    """(negative, significant digits without trailing zeros, exponent) of a decimal literal, or None."""
    if not re.fullmatch(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", s):
        return None
    try:
        sign, digits, exp = Decimal(s).as_tuple()
    except (InvalidOperation, ValueError):
        return None
    ds = "".join(map(str, digits)).lstrip("0")
    if not ds:
        return False, "0", 0
    stripped = ds.rstrip("0")
    return bool(sign), stripped, int(exp) + len(ds) - len(stripped)


def _as_fraction(parts: tuple[bool, str, int]) -> Fraction | None:
    neg, ds, exp = parts
    if len(ds) + abs(exp) > _MAX_DIGITS:
        return None
    value = Fraction(int(ds)) * (Fraction(10) ** exp)
    return -value if neg else value


def _canonical_number(s: str) -> str | None:
    """Exact canonical form of a numeric literal: integers as digits, other rationals as "p/q", values
    too large to expand as "<digits>e<exp>"; None if ``s`` is not a number."""
    num, _, den = s.partition("/")
    if den:
        a, b = _decimal_parts(num), _decimal_parts(den)
        if a is None or b is None or b[1] == "0":
            return None
        fa, fb = _as_fraction(a), _as_fraction(b)
        if fa is None or fb is None:
            return f"{'-' if a[0] else ''}{a[1]}e{a[2]}/{'-' if b[0] else ''}{b[1]}e{b[2]}"
        value = fa / fb
    else:
        parts = _decimal_parts(s)
        if parts is None:
            return None
        neg, ds, exp = parts
        if ds == "0":
            return "0"
        if exp >= 0 and len(ds) + exp <= _MAX_DIGITS:
            return ("-" if neg else "") + ds + "0" * exp
        value = _as_fraction(parts)
        if value is None:
            return f"{'-' if neg else ''}{ds}e{exp}"
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def _corrected_normalize(s: str) -> str:
    s = _CURRENCY.sub("", s.strip().strip("*_`")).replace(",", "").strip().rstrip(".")
    canon = _canonical_number(re.sub(r"\s+", "", s))
    return canon if canon is not None else re.sub(r"\s+", " ", s).lower()


# --------------------------------------------------------------------------------------------------
# public API


def extract_answer(text: str, mode: Mode, answer_regex: str | None = None) -> str | None:
    """The predicted answer string of a completion (None when nothing can be extracted).

    With ``answer_regex`` the seed mode takes the first match (group 1 if the pattern has groups) as is;
    the corrected mode takes the last match and reads the number inside it."""
    if answer_regex:
        if mode == "corrected":
            matches = list(re.finditer(answer_regex, text))
            m = matches[-1] if matches else None
        else:
            m = re.search(answer_regex, text)
        if m is None:
            return None
        got = m.group(1) if m.groups() else m.group(0)
        return got if mode == "seed_compatible" or got is None else _resolve(got)
    return _seed_extract(text) if mode == "seed_compatible" else _corrected_extract(text)


def normalize(s: str, mode: Mode) -> str:
    """Comparison form of an answer. Seed: the original's float-based normalisation. Corrected: an exact
    canonical number ("14.00" -> "14", "0.5" -> "1/2", "7,500" -> "7500") or the lower-cased text."""
    return _seed_normalize(s) if mode == "seed_compatible" else _corrected_normalize(s)


def answers_equal(pred: str | None, gold: str | None, mode: Mode) -> bool | None:
    """True/False when both answers exist, None (unknown) when either is missing."""
    if pred is None or gold is None:
        return None
    return normalize(pred, mode) == normalize(gold, mode)


def grade(
    completion: str, gold: str | None, mode: Mode = "corrected", answer_regex: str | None = None
) -> Grade:
    """Extract the answer of ``completion`` and compare it with ``gold``; never raises on model text."""
    pred = extract_answer(completion, mode, answer_regex)
    return Grade(pred, answers_equal(pred, gold, mode))
