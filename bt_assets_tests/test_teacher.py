"""Teacher-forced stages on tiny random models: the shared-prefix scan equals one full forward per
variant; the logit lens reads the last layer without a second norm; continuation rows are complete."""

from __future__ import annotations

import pytest
import torch

from bt_assets.lib import teacher
from bt_assets.lib.hooks import decoder_layers
from bt_assets_tests.conftest import tiny_model

pytestmark = pytest.mark.slow  # every test loads a tiny model
TOL = 1e-4  # fp32: the cached one-position step and a full forward differ only in summation order


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def model(request):
    return tiny_model(request.param, seed=1)


def events(n: int = 3) -> list[teacher.Event]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        length = 12 + 5 * i
        ids = torch.randint(0, 49152, (length,), generator=g).tolist()
        out.append(teacher.Event(str(i), tuple(ids), length - 2, ids[-1]))
    return out


def test_scan_equals_bruteforce(model):
    n_layers = len(decoder_layers(model))
    table, variants = teacher.single_component_table(n_layers, ["attn", "mlp"], range(n_layers), 0.0)
    assert len(variants) == 2 * n_layers
    for ev in events():
        fast = teacher.score_at_onset(model, ev, table)
        slow = teacher.scan_bruteforce(model, ev, table)
        assert fast.shape == slow.shape == (1 + len(variants), 49152)
        assert torch.allclose(fast, slow, atol=TOL, rtol=0), float((fast - slow).abs().max())
        # each ablation changes the target logit; the clean row does not depend on the table
        assert (fast[1:, ev.target] != fast[0, ev.target]).all()


def test_scaled_scan_and_position_zero(model):
    n_layers = len(decoder_layers(model))
    table, _ = teacher.single_component_table(n_layers, ["mlp"], [1], 0.5)
    ev = teacher.Event("p0", (5, 6, 7), 0, 6)
    assert torch.allclose(
        teacher.score_at_onset(model, ev, table), teacher.scan_bruteforce(model, ev, table), atol=TOL, rtol=0
    )


def test_logit_lens_last_layer_is_the_model_logit(model):
    evs = events()
    lens = teacher.logit_lens(model, evs, batch_size=2)
    assert lens.shape == (len(evs), len(decoder_layers(model)), 2)
    for i, ev in enumerate(evs):
        with torch.inference_mode():
            logits = model(torch.tensor([ev.ids[: ev.pred_pos + 1]])).logits[0, -1].float()
        assert abs(float(lens[i, -1, 0]) - float(logits[ev.target])) < TOL  # no double norm (B9)
        assert abs(float(lens[i, -1, 1]) - float(torch.log_softmax(logits, -1)[ev.target])) < TOL


def test_continuation_rows(model, demo_tokenizer):
    n_layers = len(decoder_layers(model))
    scales = [0.0, 0.5]
    table = torch.ones(1 + len(scales), n_layers, 2)
    table[1, 2, 1], table[2, 2, 1] = 0.0, 0.5
    rows = teacher.continuation_rows(
        model, demo_tokenizer, events(2), table, [1.0, *scales], 3, ["Actually", "Hold on"], "mlp2"
    )
    assert len(rows) == 2 * 3
    assert {r["condition"] for r in rows} == {"clean", "ablated"}
    assert all(0.0 <= r["onset_prob"] <= 1.0 and len(r["top_tokens"].split("|")) == 3 for r in rows)
    for r in rows:  # the onset scored as a family: the target's own probability is part of it
        assert r["onset_family_prob"] >= r["onset_prob"] - 1e-6 and r["onset_family_size"] >= 1
        assert r["onset_family_prob"] + r["synonym_family_prob"] <= 1.0 + 1e-6
    clean = [r for r in rows if r["condition"] == "clean"]
    assert all(r["onset_family_prob_drop"] == 0.0 == r["onset_logit_drop"] for r in clean)
