"""Teacher forcing on the ids the model saw (issue 13, item 7): the onset's character offset maps to a
position in the STORED completion ids, and every probe is the prompt ids the engine fed + the sampled
completion ids, not prompt + completion re-tokenised (decode then encode need not give the sampled ids)."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from bt_assets.lib import onset_analysis as onset
from bt_assets.lib.engine import Request, SamplingConfig, generate
from bt_assets.lib.generation import encode_prompt
from bt_assets.lib.hooks import scale_table
from bt_assets.lib.teacher import encode_full, score_at_onset, stored_onset_index
from bt_assets_tests.conftest import EOS_ID, WAIT_IDS, tiny_model

PROMPT = "Question: what is 2 + 3? Answer:"


def view_row(tok, example_id: int, ids: list[int], char: int, bt: bool) -> dict:
    """One baseline completion as ``event_sample`` reads it; the re-tokenised fields are deliberately
    wrong (0), so only the stored-id mapping can give the right positions."""
    text = tok.decode(ids, skip_special_tokens=True)
    return {
        "example_id": example_id,
        "sample_id": 0,
        "variant": "base",
        "condition": "baseline",
        "has_backtracking_strict": bt,
        "onset_char": char if bt else -1,
        "onset_token_in_completion": 0 if bt else -1,
        "onset_token_in_full": 0 if bt else -1,
        "onset_token_id": 0 if bt else -1,
        "onset_token_text": "",
        "pred_pos_in_full": 0 if bt else -1,
        "prompt_tokens": len(encode_prompt(tok, PROMPT, False)),
        "completion_tokens": len(ids),
        "completion": text,
        "completion_token_ids": ids,
    }


def prompts_of(n: int) -> pl.DataFrame:
    return pl.DataFrame({"variant": ["base"] * n, "example_id": list(range(n)), "prompt": [PROMPT] * n})


def split_wait_ids(tok) -> list[int]:
    """Sampled ids " " + "Wait" where the tokenizer encodes the text " Wait" as ONE token."""
    space = tok.convert_tokens_to_ids("Ġ")
    head = tok("So the sum is 5.", add_special_tokens=False)["input_ids"]
    tail = tok(" the sum is 5.", add_special_tokens=False)["input_ids"]
    return [*head, space, WAIT_IDS[0], *tail]


def test_split_tokens_map_to_the_sampled_ids(demo_tokenizer):
    tok = demo_tokenizer
    ids = split_wait_ids(tok)
    text = tok.decode(ids, skip_special_tokens=True)
    assert tok.decode([WAIT_IDS[1]]) == " Wait" and " Wait" in text
    # re-tokenising merges " " + "Wait" into " Wait": every position after it shifts by one
    retok = list(tok(text, add_special_tokens=False)["input_ids"])
    assert retok != ids and WAIT_IDS[1] in retok and WAIT_IDS[0] not in retok
    k_wait = ids.index(WAIT_IDS[0])
    assert stored_onset_index(tok, ids, text, text.index("Wait")) == k_wait
    assert stored_onset_index(tok, ids, text, text.index(" Wait")) == k_wait - 1  # the lone space
    assert stored_onset_index(tok, ids, text, 0) == 0
    assert stored_onset_index(tok, ids, text, len(text) - 1) == len(ids) - 1
    assert stored_onset_index(tok, ids, text, len(text)) == -1

    control = tok("First add the two numbers and then check.", add_special_tokens=False)["input_ids"]
    view = pl.DataFrame(
        [view_row(tok, 0, ids, text.index("Wait"), True), view_row(tok, 1, control, -1, False)]
    )
    sample, n = onset.event_sample(view, 10, 0, tok)
    assert n["n_bt"] == 1 and n["n_control"] == 1
    assert set(onset.PROBE_COLUMNS + ["kind", "completion_token_ids"]) == set(sample.columns)
    p_ids = encode_prompt(tok, PROMPT, False)
    (bt,) = onset.kind_probes(sample, "bt", prompts_of(2), tok, False)
    assert list(bt.ids) == p_ids + ids
    assert bt.pred_pos == len(p_ids) + k_wait - 1 and bt.target == WAIT_IDS[0] == bt.ids[bt.pred_pos + 1]
    bt_row = sample.filter(pl.col("kind") == "bt").row(0, named=True)
    assert bt_row["onset_token_text"] == "Wait"
    # re-tokenising would have probed another token at that position (the merged " Wait" sits one earlier)
    full = encode_full(tok, PROMPT, text, False)
    assert full[bt.pred_pos + 1] != bt.target and full[bt.pred_pos] == WAIT_IDS[1]
    (ctl,) = onset.kind_probes(sample, "control", prompts_of(2), tok, False)
    assert list(ctl.ids) == p_ids + control  # same offset into its own sampled ids, the event's target
    assert ctl.pred_pos == bt.pred_pos and ctl.target == bt.target

    # without a tokenizer (or stored ids) the sample keeps the re-tokenised positions and carries no ids
    old, _ = onset.event_sample(view.with_columns(pl.lit(3).alias("pred_pos_in_full")), 10, 0)
    assert "completion_token_ids" not in old.columns
    (re_bt,) = onset.kind_probes(old, "bt", prompts_of(2), tok, False)
    assert re_bt.ids == full


class LogitTap:
    """Records the logits of every forward the engine runs (the last position of each row)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.steps: list[torch.Tensor] = []
        self.handle = model.get_output_embeddings().register_forward_hook(self.hook)

    def hook(self, _module, _args, out) -> None:
        self.steps.append(out[:, -1].detach().float().clone())


@pytest.mark.slow
def test_probes_reproduce_the_logits_the_engine_saw(demo_tokenizer):
    tok = demo_tokenizer
    model = tiny_model("qwen2", seed=1)
    p_ids = encode_prompt(tok, PROMPT, False)
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=24, seed=5)
    completions, seen = [], []
    for example in range(4):  # one request per call: the tap's k-th forward predicts token k
        tap = LogitTap(model)
        req = Request(example, 0, 0, tuple(p_ids))
        out = [
            c for b in generate(model, [req], scale_table([{}], 4), sampling, [EOS_ID], EOS_ID, 1) for c in b
        ]
        tap.handle.remove()
        completions.append(list(out[0].token_ids))
        seen.append(tap.steps)
    rows, onsets = [], []
    for example, ids in enumerate(completions):
        text = tok.decode(ids, skip_special_tokens=True)
        # the onset: the first character of a token in the middle whose text is non-empty and clean
        k = next(
            j
            for j in range(len(ids) // 2, len(ids))
            if len(tok.decode(ids[: j + 1])) > len(prefix := tok.decode(ids[:j])) and text.startswith(prefix)
        )
        onsets.append(k)
        rows.append(view_row(tok, example, ids, len(tok.decode(ids[:k])), example < 2))
    sample, n = onset.event_sample(pl.DataFrame(rows), 10, 0, tok)
    assert n["n_bt"] == 2 and n["n_control"] == 2
    probes = [
        *onset.kind_probes(sample, "bt", prompts_of(4), tok, False),
        *onset.kind_probes(sample, "control", prompts_of(4), tok, False),
    ]
    clean = torch.ones(1, 4, 2)
    bt_targets = [(p.pred_pos, p.target) for p in probes if int(p.key.split("/")[1]) < 2]
    for ev in probes:
        example = int(ev.key.split("/")[1])
        ids = completions[example]
        assert list(ev.ids) == p_ids + ids
        step = ev.pred_pos + 1 - len(p_ids)  # the completion token the prediction position predicts
        if example < 2:
            assert step == onsets[example] and ev.target == ids[step] == ev.ids[ev.pred_pos + 1]
        else:  # a control: the offset of its event, scored on the event's own onset token
            assert (ev.pred_pos, ev.target) in bt_targets
        logits = score_at_onset(model, ev, clean)[0]
        engine = seen[example][step][0]
        assert torch.allclose(logits, engine, atol=1e-4, rtol=0)
        assert abs(logits[ev.target] - engine[ev.target]) < 1e-4
