"""Token families: every token id that starts a word in any casing, with or without a leading space.

A backtracking onset is a word ("Wait"), but the model can start it with several tokens ("Wait",
" Wait", " wait", "WAIT"); scoring one id counts the others as neither the onset nor a synonym. A family
is the first token of each casing/space variant of each word, kept only when that token IS the word's
first word (decodes to it, case-insensitively): a word split into pieces ("H" + "mm") contributes
nothing rather than a generic piece that starts many other words.
"""

from __future__ import annotations

from collections.abc import Iterable


def word_variants(word: str) -> list[str]:
    """``"hold on"`` -> as written, lower, Capitalised, UPPER; each bare and with one leading space."""
    w = " ".join(word.split())
    cased = dict.fromkeys([w, w.lower(), w[:1].upper() + w[1:].lower(), w.upper()])
    return [v for c in cased for v in (c, f" {c}")]


def token_family(tokenizer, words: Iterable[str]) -> frozenset[int]:
    """Ids of the whole-word first tokens of every variant of ``words`` (``word_variants``)."""
    out: set[int] = set()
    for word in words:
        first = word.split()[0].lower() if word.split() else ""
        for variant in word_variants(word):
            ids = tokenizer.encode(variant, add_special_tokens=False)
            if ids and tokenizer.decode([ids[0]]).strip().lower() == first:
                out.add(int(ids[0]))
    return frozenset(out)


def onset_family(tokenizer, target: int) -> frozenset[int]:
    """The family of an onset token: ``target`` itself plus the variants of the word it decodes to."""
    word = tokenizer.decode([target]).strip()
    return frozenset({int(target)}) | (token_family(tokenizer, [word]) if word else frozenset())
