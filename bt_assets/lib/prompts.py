"""Exact prompt text per (variant, problem), in the original's semantics or corrected (B10).

Template placeholders: ``{question}`` (required), ``{think_open}`` / ``{think_close}`` (corrected mode only).
Substitution is literal ``str.replace`` (not ``str.format``): other braces in the template or the question
are kept as they are. Think strings are substituted before the question, so question text is never touched.

``seed_compatible`` (the original, bugs included):
  user prompt = template minus the variant's ``drop_lines``, ``{question}`` filled; think strings are never
  used, so ``baseline_think_newline`` and ``think_same_line`` render byte-identical prompts (the
  ``prompts`` asset check flags them).  Prompt = ``system_prompt + "\\n\\n" + user`` (user only if no system
  prompt, as in Phase 2).
``corrected`` (the platform default):
  user prompt as above, plus ``{think_open}`` / ``{think_close}`` filled if the template has them.  If the
  template has no ``{think_open}``, the variant's ``think_open`` is appended to the very end of the prompt,
  so generation starts inside the think block:
    plain:  ``system_prompt + "\\n\\n" + user + think_open``  (user ends with the template's final newline)
    chat:   ``apply_chat_template([system, user], add_generation_prompt=True) + think_open``
  e.g. plain ``...Problem: <q>\\n<think>\\n`` vs ``...Problem: <q>\\n<think> `` vs ``...Problem: <q>\\n``
  (no_think_tags, also without its dropped line).  think_open is not appended twice when a chat template
  already ends with it (templates that open the think block themselves).

With ``chat_template`` (either mode) the user message is the user prompt with trailing whitespace removed
(the chat template supplies its own separators); an empty/None system prompt sends no system message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import polars as pl

Mode = Literal["seed_compatible", "corrected"]
PROMPT_TABLE_SCHEMA = {
    "variant": pl.String,
    "example_id": pl.Int64,
    "prompt": pl.String,
    "prompt_tokens": pl.Int64,
    "prompt_hash": pl.String,
}


@dataclass(frozen=True)
class Variant:
    name: str
    think_open: str
    think_close: str
    drop_lines: tuple[str, ...] = ()  # template lines removed for this variant (matched after strip())


@dataclass(frozen=True)
class PromptStyle:
    template: str
    system_prompt: str | None = None
    chat_template: bool = False
    mode: Mode = "corrected"

    def __post_init__(self) -> None:
        if self.mode not in ("seed_compatible", "corrected"):
            raise ValueError(f"prompt mode must be 'seed_compatible' or 'corrected', got {self.mode!r}")
        if "{question}" not in self.template:
            raise ValueError("prompt template must contain '{question}'")
        has_think = "{think_open}" in self.template or "{think_close}" in self.template
        if self.mode == "seed_compatible" and has_think:
            raise ValueError(
                "{think_open}/{think_close} placeholders need mode 'corrected' (the original "
                "never inserted think strings)"
            )


def prompt_hash(prompt: str) -> str:
    """First 16 hex chars of the sha256 of the exact prompt text."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def _drop(template: str, drop_lines: Sequence[str]) -> str:
    """Remove every template line equal (after strip()) to one of ``drop_lines``; unknown lines raise."""
    lines = template.splitlines(keepends=True)
    for d in drop_lines:
        if not any(line.strip() == d.strip() for line in lines):
            raise ValueError(f"drop_lines entry {d!r} is not a line of the prompt template")
    wanted = {d.strip() for d in drop_lines}
    return "".join(line for line in lines if line.strip() not in wanted)


def render_user_prompt(question: str, variant: Variant, style: PromptStyle) -> str:
    """The user turn: template minus dropped lines, placeholders filled (think ones in corrected mode)."""
    text = _drop(style.template, variant.drop_lines)
    if style.mode == "corrected":
        text = text.replace("{think_open}", variant.think_open).replace("{think_close}", variant.think_close)
    return text.replace("{question}", question)


def render_prompt(question: str, variant: Variant, style: PromptStyle, tokenizer=None) -> str:
    """The exact text the model is prompted with (see the module docstring for both modes)."""
    user = render_user_prompt(question, variant, style)
    if style.chat_template:
        if tokenizer is None:
            raise ValueError("chat_template=True needs a tokenizer")
        messages = [{"role": "system", "content": style.system_prompt}] if style.system_prompt else []
        messages.append({"role": "user", "content": user.rstrip()})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = f"{style.system_prompt}\n\n{user}" if style.system_prompt else user
    placed = "{think_open}" in style.template or text.endswith(variant.think_open)
    if style.mode == "corrected" and not placed:
        text += variant.think_open
    return text


def prompt_table(
    problems: pl.DataFrame,
    variants: Sequence[Variant],
    style: PromptStyle,
    tokenizer=None,
    add_special_tokens: bool = True,
) -> pl.DataFrame:
    """One row per (variant, problem) in the given orders: variant, example_id, prompt, prompt_tokens, hash.

    ``prompt_tokens`` = ``len(tokenizer(prompt, add_special_tokens=...))``, the sequence the model sees
    (null without a tokenizer).
    """
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate variant names: {names}")
    ids, questions = problems["id"].to_list(), problems["question"].to_list()
    pairs = list(zip(ids, questions, strict=True))
    rows = [(v.name, i, render_prompt(q, v, style, tokenizer)) for v in variants for i, q in pairs]
    prompts = [p for _, _, p in rows]
    counts: list[int | None] = [None] * len(prompts)
    if tokenizer is not None and prompts:
        counts = [len(x) for x in tokenizer(prompts, add_special_tokens=add_special_tokens)["input_ids"]]
    cols = {
        "variant": [r[0] for r in rows],
        "example_id": [r[1] for r in rows],
        "prompt": prompts,
        "prompt_tokens": counts,
        "prompt_hash": [prompt_hash(p) for p in prompts],
    }
    return pl.DataFrame(cols, schema=PROMPT_TABLE_SCHEMA)


def identical_variant_pairs(table: pl.DataFrame) -> list[tuple[str, str]]:
    """Pairs of variants (in table order) whose prompts are identical for every problem (B10)."""
    by_variant: dict[str, dict[int, str]] = {}
    for v, i, p in table.select("variant", "example_id", "prompt").iter_rows():
        by_variant.setdefault(v, {})[i] = p
    names = list(by_variant)
    return [(a, b) for k, a in enumerate(names) for b in names[k + 1 :] if by_variant[a] == by_variant[b]]


def tokens_by_variant(table: pl.DataFrame) -> pl.DataFrame:
    """Mean prompt length in tokens per variant (table order)."""
    return table.group_by("variant", maintain_order=True).agg(
        pl.col("prompt_tokens").mean().alias("mean_tokens")
    )
