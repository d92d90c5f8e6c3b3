"""Backtracking detection in a completion (the prompt is never searched) and the onset token position.

A completion backtracks when the model interrupts its own line of reasoning with a discourse marker
("Wait", "Actually", "Hold on", ...) to re-examine or revise it, whether or not the check changes the
result. The onset is the trigger word itself, as written ("wait" in "But wait,", "Hold on" in
"**Hold on**,"), never the interjection before it: its token is the one the model chose when it started
to backtrack, the token the original's Phase-1/2 analyses target (" wait", "Wait", " Wait").

``seed_compatible`` (spec 2.1): per trigger list one pattern ``\\b(p1|p2|...)\\b`` of the regex-escaped
phrases in list order, always case-insensitive; the earliest match start wins; the onset is the earliest
strict match, else the earliest relaxed match; ``onset_phrase`` keeps the casing found. It also counts
the verb and the noun ("I'll wait", "wait time"), and misses "_Wait_" (``_`` is a word character).

``corrected`` (B16, validated on ``bt_assets_tests/fixtures/detector_labels.jsonl``, README "Detector
validation"): a trigger, in any casing, is a marker when it opens a clause, in one of three ways:
  * a sentence opening: at the start of the text or after ``. ! ? : ;`` or a newline, behind up to three
    interjections ("But wait", "Hmm, hold on", "Oh no, wait", "Okay, so wait"), and not followed by a
    word that makes it the verb or the noun ("Wait for ...", "Wait times ...", "Hold on to ...", "Wait
    three days");
  * a clause opening inside a sentence (after ``, ( … — –`` or a spaced hyphen) behind at least one
    interjection (", but wait, ..."), with the same verb/noun exclusion;
  * a clause opening, or a mid-sentence "but"/"oh"/"hmm"/"ah", right before the trigger, when the
    trigger is followed by a pause (punctuation, a dash, a line end, "a second", "no"): "..., wait, no".
  Spaces and markdown/quote characters may wrap the trigger ("**Wait**,", "*Hold on*"). Triggers listed
  without a capital first letter (e.g. "mistake") are noun mentions, not markers, and are dropped; so the
  relaxed list keeps "Let me check", "Let's check", "I was wrong" and the strict ones. The earliest marker
  wins; when an interjection is itself a trigger ("Actually wait"), that earlier trigger is the onset.

Token position (spec 2.1): the onset character in the full text (prompt + completion) is mapped to the
first token whose offset span contains it or starts at it; ``pred_pos_in_full`` = that index - 1 is the
position whose logits predict the onset token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

Mode = Literal["seed_compatible", "corrected"]

# --- corrected mode: the named pieces of a marker pattern (compiled case-insensitive) ---------------
# A word edge where "_" counts as punctuation, so "_Wait_" (markdown italics) is a whole word.
_NOT_WORD_BEFORE, _NOT_WORD_AFTER = r"(?<![^\W_])", r"(?![^\W_])"
# A sentence or line opens: the start of the text, or after . ! ? : ; (an ellipsis ends in ".") or \n.
_SENTENCE_OPEN = r"(?:\A|(?<=[.!?:;\n]))"
# A clause opens inside a sentence: after a comma, "(", an ellipsis character, a dash or a spaced "-".
_CLAUSE_OPEN = r"(?:(?<=[,(…—–])|(?<=\s-))"
# Spaces and markdown/quote decoration between an opening (or an interjection) and the next word;
# bounded, so that a long run of "(" or " -" (each one an opening) keeps a search linear.
_DECOR = r"[ \t*_\"'“‘(\[#>-]{0,16}"
# Interjections that R1 puts in front of a marker, each with its own punctuation ("Hmm,", "Oh no,").
# "And" leads only at a sentence opening: after a comma it joins verbs ("they sit, and wait, ...").
_INTERJECTION = r"(?:but|so|okay|ok|well|yes|yeah|no+|nope|oh+|ah+|hm+|um+|uh+|oops|actually|wait|hold\s+on)"
_LEAD = rf"(?:{_INTERJECTION}{_NOT_WORD_AFTER}[,.!…]*{_DECOR})"
_SENTENCE_LEAD = rf"(?:(?:and|{_INTERJECTION}){_NOT_WORD_AFTER}[,.!…]*{_DECOR})"
# At most this many interjections in a row ("Hmm, okay, so wait"); the bound keeps a search linear.
_MAX_LEADS = 3
# Mid-sentence words that open a clause of their own ("... is 8 but wait, ..."): only with a pause after.
_MID_LEAD = rf"(?:{_NOT_WORD_BEFORE}(?:but|oh+|hm+|ah+),?[ \t]+{_DECOR})"
# A pause right after a marker: punctuation, a dash, a line end or the text end, "a second", "no".
_PAUSE = (
    r"[*_\"'”’]*(?:[,.!?;:…—–)]|[ \t]+-|[ \t]*(?:\n|\Z)"
    rf"|[ \t]+(?:a\s+(?:second|sec|moment|minute|bit)|no){_NOT_WORD_AFTER})"
)
# A duration or amount after "wait" makes it the verb ("Wait 5 minutes", "wait three days", "wait an hour").
_AMOUNT = (
    r"\d|(?:one|two|three|four|five|six|seven|eight|nine|ten|twelve|twenty|thirty|half|an|a\s+few"
    r"|several|another)\b"
)
# Words after a trigger that make it the verb or the noun, not a marker ("wait for", "Wait times").
_NOT_A_MARKER_AFTER: dict[str, str] = {
    "wait": rf"(?:for|until|till|til|on|time|times|list|lists|line|lines|staff|here|there|outside|inside"
    rf"|patiently|around|while|and\s+see){_NOT_WORD_AFTER}|{_AMOUNT}",
    "hold on": rf"(?:to|tight|tightly|for|until){_NOT_WORD_AFTER}",
}


@dataclass(frozen=True)
class Onset:
    has_strict: bool
    has_relaxed: bool
    phrase: str  # matched text as found ("" if none)
    char: int  # offset in the completion (-1 if none)


def _pattern(triggers: Sequence[str], mode: Mode) -> re.Pattern | None:
    alternation = "|".join(re.escape(t) for t in triggers)
    if not alternation:
        return None
    if mode == "seed_compatible":
        return re.compile(rf"\b({alternation})\b", re.IGNORECASE)
    return _marker_pattern(tuple(triggers))


def _trigger(trigger: str, check_next_word: bool) -> str:
    """One trigger as a whole word (not a hyphen compound such as "Wait-time"), optionally excluding
    the words after it that make it the verb or the noun."""
    pattern = rf"{re.escape(trigger)}{_NOT_WORD_AFTER}(?!-[^\W\d_])"
    not_after = _NOT_A_MARKER_AFTER.get(" ".join(trigger.lower().split()))
    if check_next_word and not_after:
        pattern += rf"(?![*_]*[ \t]+(?:{not_after}))"
    return pattern


@lru_cache(maxsize=64)
def _marker_pattern(triggers: tuple[str, ...]) -> re.Pattern:
    """The corrected pattern: one alternative per way a marker opens its clause (see the docstring);
    exactly one of the groups ``sentence``, ``clause``, ``pause`` holds the trigger of a match."""
    checked = "|".join(_trigger(t, check_next_word=True) for t in triggers)
    plain = "|".join(_trigger(t, check_next_word=False) for t in triggers)
    return re.compile(
        rf"{_SENTENCE_OPEN}{_DECOR}{_SENTENCE_LEAD}{{0,{_MAX_LEADS}}}?(?P<sentence>{checked})"
        rf"|{_CLAUSE_OPEN}{_DECOR}{_LEAD}{{1,{_MAX_LEADS}}}?(?P<clause>{checked})"
        rf"|(?:{_CLAUSE_OPEN}{_DECOR}|{_MID_LEAD})(?P<pause>{plain})(?={_PAUSE})",
        re.IGNORECASE,
    )


def _earliest(text: str, triggers: Sequence[str], mode: Mode) -> tuple[str, int]:
    if mode == "corrected":
        triggers = [t for t in triggers if t[:1].isupper()]
    pattern = _pattern(triggers, mode)
    m = pattern.search(text) if pattern is not None else None  # search = earliest start
    if m is None:
        return ("", -1)
    group = 1 if mode == "seed_compatible" else m.lastgroup
    return (m.group(group), m.start(group))


def detect(completion: str, strict: Sequence[str], relaxed: Sequence[str], mode: Mode) -> Onset:
    """Strict/relaxed backtracking flags and the onset (earliest strict match, else earliest relaxed)."""
    s_phrase, s_char = _earliest(completion, strict, mode)
    r_phrase, r_char = _earliest(completion, relaxed, mode)
    if s_char >= 0:
        return Onset(True, r_char >= 0, s_phrase, s_char)
    return Onset(False, r_char >= 0, r_phrase, r_char)


def onset_token(
    offsets: Sequence[tuple[int, int]], char: int, skip_first_if_bos: bool, text_len: int | None = None
) -> int:
    """Index of the first token whose span contains ``char`` or starts at it (index 0 is skipped when it
    is a BOS with (0, 0) offsets and ``skip_first_if_bos``). If none and ``char`` is at/after the last
    character (``text_len - 1``; default: the largest offset end) -> the last token; else -1."""
    for i, (start, end) in enumerate(offsets):
        if i == 0 and skip_first_if_bos and start == 0 and end == 0:
            continue
        if start <= char < end or char == start:
            return i
    n_chars = text_len if text_len is not None else max((e for _, e in offsets), default=0)
    return len(offsets) - 1 if offsets and char >= n_chars - 1 else -1


def encode_with_offsets(
    tokenizer, text: str, add_bos: bool, prepend_missing_bos: bool = False
) -> tuple[list[int], list[tuple[int, int]], bool]:
    """(ids, offsets, has_bos) of ``text`` encoded as the platform encodes it for the model:
    ``tokenizer(text, add_special_tokens=add_bos)`` (the same ids as ``generation.encode_prompt`` and
    ``teacher.encode_full``). With ``prepend_missing_bos`` a BOS is prepended with (0, 0) offsets when
    ``add_bos`` is set, the tokenizer has a BOS id and did not add it itself."""
    enc = tokenizer(text, add_special_tokens=add_bos, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    bos = tokenizer.bos_token_id
    if add_bos and prepend_missing_bos and bos is not None and (not ids or ids[0] != bos):
        ids, offsets = [bos, *ids], [(0, 0), *offsets]
    has_bos = add_bos and bos is not None and bool(ids) and ids[0] == bos
    return ids, offsets, has_bos


NO_ONSET = {
    "onset_token_in_completion": -1,
    "onset_token_in_full": -1,
    "onset_token_id": -1,
    "onset_token_text": "",
    "pred_pos_in_full": -1,
}


def onset_fields(
    tokenizer,
    prompt_text: str,
    completion_text: str,
    onset: Onset,
    add_bos: bool,
    prepend_missing_bos: bool = False,
) -> dict:
    """Token fields of an onset (spec 2.1): full_text = prompt + completion is re-tokenised with offsets;
    ``onset_token_in_completion`` = max(0, index - token count of the re-tokenised prompt);
    ``pred_pos_in_full`` = index - 1 (0 when the index is 0). All -1 (text "") without an onset."""
    if onset.char < 0:
        return dict(NO_ONSET)
    full = prompt_text + completion_text
    ids, offsets, has_bos = encode_with_offsets(tokenizer, full, add_bos, prepend_missing_bos)
    idx = onset_token(offsets, len(prompt_text) + onset.char, has_bos, text_len=len(full))
    n_prompt = len(encode_with_offsets(tokenizer, prompt_text, add_bos, prepend_missing_bos)[0])
    in_range = 0 <= idx < len(ids)
    return {
        "onset_token_in_completion": max(0, idx - n_prompt),
        "onset_token_in_full": idx,
        "onset_token_id": int(ids[idx]) if in_range else -1,
        "onset_token_text": tokenizer.decode([ids[idx]]) if in_range else "",
        "pred_pos_in_full": idx - 1 if idx > 0 else 0,
    }
