"""Steering vectors: the residual stream read where the steer hook adds, the held-out split by problem,
the AUC, the layer choice, and a planted direction recovered (in synthetic residuals and through a tiny
model); component means over decode positions equal a position-by-position reference."""

from __future__ import annotations

import math

import pytest
import torch

from bt_assets.lib import component_means as cm
from bt_assets.lib import steering
from bt_assets.lib.hooks import COMPONENTS, component_module, decoder_layers
from bt_assets.lib.teacher import Event
from bt_assets_tests.conftest import tiny_model

SLOW = pytest.mark.slow


def test_auc():
    assert steering.auc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert steering.auc(torch.tensor([1.0]), torch.tensor([1.0, 2.0])) == 0.25  # a tie counts 1/2
    assert math.isnan(steering.auc(torch.tensor([]), torch.tensor([1.0])))


def test_heldout_problems():
    keys = [f"v/{p}/{s}" for p in range(10) for s in range(3)]
    held = steering.heldout_problems(keys, 0.3, seed=1)
    assert len(held) == 3 and held == steering.heldout_problems(list(reversed(keys)), 0.3, seed=1)
    assert held != steering.heldout_problems(keys, 0.3, seed=2)
    assert steering.heldout_problems(["v/0/0", "v/0/1"], 0.5, 0) == set()  # one problem: nothing held out
    assert len(steering.heldout_problems(["v/0/0", "v/1/0"], 0.9, 0)) == 1  # never every problem


def planted(n: int, layers: int = 3, d: int = 16, layer: int = 1, seed: int = 0):
    """Residuals (n, L, d) of BT and control probes whose means differ by 2 x u at ``layer`` only."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=g)
    u /= u.norm()
    bt, ctl = torch.randn(n, layers, d, generator=g), torch.randn(n, layers, d, generator=g)
    bt[:, layer] += 2.0 * u
    keys = [f"v/{i % 12}/{i}" for i in range(n)]
    return bt, ctl, keys, u


def test_planted_direction_in_synthetic_residuals():
    bt, ctl, keys, u = planted(240)
    table = steering.steering_table(bt, ctl, keys, keys, 0.25, seed=0)
    assert table["layer"].to_list() == [0, 1, 2] and set(steering.STEERING_SCHEMA) == set(table.columns)
    v = torch.tensor(table["vector"][1].to_list())
    assert abs(float(v.norm()) - 1) < 1e-5 and float(v @ u) > 0.95
    aucs = table["auc_heldout"].to_list()
    assert aucs[1] > 0.9 and all(0.3 < a < 0.7 for a in (aucs[0], aucs[2]))
    assert table["n_bt_heldout"][0] + table["n_bt_train"][0] == 240 and table["n_bt_heldout"][0] == 60
    assert steering.choose_layer(table, "auto", "k") == 1 and steering.choose_layer(table, 2, "k") == 2
    with pytest.raises(ValueError, match="phase2.interventions.3.layer: layer 7 has no steering vector"):
        steering.choose_layer(table, 7, "phase2.interventions.3.layer")
    one = steering.steering_table(bt[:4], ctl[:4], ["v/0/0"] * 4, ["v/0/0"] * 4, 0.3, 0)  # no held-out part
    with pytest.raises(ValueError, match="k.layer: 'auto' needs a held-out AUC"):
        steering.choose_layer(one, "auto", "k.layer")


@pytest.fixture(scope="module", params=[pytest.param(a, marks=SLOW) for a in ("qwen2", "llama")])
def model(request):
    return tiny_model(request.param, seed=2)


def probes(n: int, last: int, seed: int, tag: str) -> list[Event]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids = [*torch.randint(0, 49152, (6 + i % 4,), generator=g).tolist(), last]
        out.append(Event(f"{tag}/{i % 8}/{i}", tuple(ids), len(ids) - 1, 0))
    return out


def test_residuals_are_the_layer_outputs(model):
    evs = probes(5, 7, seed=0, tag="v")
    res = steering.residuals_at(model, evs, batch_size=2)  # right padding: uneven lengths
    n_layers = len(decoder_layers(model))
    assert res.shape == (5, n_layers, model.config.hidden_size)
    for i, ev in enumerate(evs):
        with torch.inference_mode():
            hs = model(torch.tensor([ev.ids]), output_hidden_states=True).hidden_states
        for layer in range(n_layers - 1):
            assert torch.allclose(res[i, layer], hs[layer + 1][0, ev.pred_pos], atol=1e-5)
        # the last layer's output is read before the final norm (HF's last hidden state is after it)
        normed = model.model.norm(res[i, -1].unsqueeze(0))[0]
        assert torch.allclose(normed, hs[-1][0, ev.pred_pos], atol=1e-5)


def test_planted_direction_through_a_model(model):
    """BT probes end on token A, controls on token B whose embedding is A's plus 1.5 u: the layer-0
    vector recovers -u, and its held-out AUC separates the two."""
    a, b = 101, 202
    u = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(9))
    u /= u.norm()
    emb = model.get_input_embeddings().weight
    saved = emb[b].clone()
    with torch.no_grad():
        emb[b] = emb[a] + 1.5 * u
    try:
        table = steering.steering_vectors(model, probes(24, a, 1, "v"), probes(24, b, 2, "v"), 0.25, 0)
    finally:
        with torch.no_grad():
            emb[b] = saved
    v = torch.tensor(table["vector"][0].to_list())
    assert float(v @ -u) > 0.9
    assert table["auc_heldout"][0] == 1.0
    assert steering.choose_layer(table, "auto", "k") in table["layer"].to_list()


def test_decode_span():
    s = cm.decode_span([1, 2, 3], [7, 8, 9], "stop")  # the EOS after 9 was never fed; 9 was
    assert (s.ids, s.start, s.end) == ((1, 2, 3, 7, 8, 9), 3, 6)
    s = cm.decode_span([1, 2, 3], [7, 8, 9], "length")  # the last sampled token is never fed
    assert (s.ids, s.start, s.end) == ((1, 2, 3, 7, 8), 3, 5)


def test_component_means_equal_a_reference(model):
    g = torch.Generator().manual_seed(4)
    spans = [
        cm.decode_span(
            torch.randint(0, 49152, (p,), generator=g).tolist(),
            torch.randint(0, 49152, (c,), generator=g).tolist(),
            "stop",
        )
        for p, c in ((4, 6), (7, 3), (5, 1), (3, 9))
    ]
    means, n = cm.component_means(model, spans, batch_size=3)
    assert n == 6 + 3 + 1 + 9
    n_layers = len(decoder_layers(model))
    ref = torch.zeros(n_layers, 2, model.config.hidden_size, dtype=torch.float64)
    for s in spans:  # one unpadded sequence at a time
        outs = {}
        handles = [
            component_module(model, layer, comp).register_forward_hook(
                lambda _m, _i, o, k=(layer, ci), acc=outs: acc.__setitem__(
                    k, o[0] if isinstance(o, tuple) else o
                )
            )
            for layer in range(n_layers)
            for ci, comp in enumerate(COMPONENTS)
        ]
        with torch.inference_mode():
            model(torch.tensor([s.ids]))
        for h in handles:
            h.remove()
        for (layer, ci), o in outs.items():
            ref[layer, ci] += o[0, s.start : s.end].double().sum(0)
    assert torch.allclose(means, (ref / n).float(), atol=1e-5)
    frame = cm.means_frame(means, n, len(spans))
    assert (
        frame.height == 2 * n_layers and frame["mean"].list.len().to_list() == [model.config.hidden_size] * 8
    )
