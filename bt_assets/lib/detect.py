"""Backtracking detection in a completion (the prompt is never searched) and the onset token position.

``seed_compatible`` (spec 2.1): per trigger list one pattern ``\\b(p1|p2|...)\\b`` of the regex-escaped
phrases in list order, always case-insensitive; the earliest match start wins; the onset is the earliest
strict match, else the earliest relaxed match; ``onset_phrase`` keeps the casing found.

``corrected`` (B16): a trigger is a discourse marker only when it
  * is written with the casing of the list ("Wait", not "wait"), and
  * opens a sentence or clause: at the start of the text, or after ``. ! ? : ;`` or a newline, with
    only spaces and markdown/quote characters (``* _ " ' “ ‘ ( [ # > -``) in between.
  Triggers listed without a capital first letter (e.g. "mistake") are noun mentions, not markers, and are
  dropped; so the relaxed list keeps "Let me check", "Let's check", "I was wrong" and the strict ones.
  Mid-sentence uses ("I'll wait", "Hmm, wait") therefore never count.

Token position (spec 2.1): the onset character in the full text (prompt + completion) is mapped to the
first token whose offset span contains it or starts at it; ``pred_pos_in_full`` = that index - 1 is the
position whose logits predict the onset token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Mode = Literal["seed_compatible", "corrected"]
_CLAUSE_START = r"(?:\A|(?<=[.!?:;\n]))[ \t*_\"'“‘(\[#>-]*"


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
    return re.compile(rf"{_CLAUSE_START}({alternation})\b")


def _earliest(text: str, triggers: Sequence[str], mode: Mode) -> tuple[str, int]:
    if mode == "corrected":
        triggers = [t for t in triggers if t[:1].isupper()]
    pattern = _pattern(triggers, mode)
    m = pattern.search(text) if pattern is not None else None  # search = earliest start
    return (m.group(1), m.start(1)) if m else ("", -1)


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
