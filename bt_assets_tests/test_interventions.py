"""The intervention kinds beyond scaling on tiny random Qwen2 / Llama models: each kind at its no-op
strength equals the baseline token for token through the engine (fp32, CPU, mixed in one batch); each
changes logits only at decode steps and only in its own rows; the token ban never emits a banned id;
bad entries fail naming their key; fingerprints of cells without interventions are unchanged."""

from __future__ import annotations

import hashlib
import json
import math

import polars as pl
import pytest
import torch

from bt_assets.lib import interventions as iv
from bt_assets.lib.engine import Request, SamplingConfig, generate
from bt_assets.lib.engine_options import EngineOptions
from bt_assets.lib.generation import Cell, GenerationStore
from bt_assets.lib.hooks import COMPONENTS, HookState, ablation_hooks
from bt_assets.lib.intervention_hooks import first_token_logits
from bt_assets.lib.sampling import stable_key
from bt_assets_tests.conftest import EOS_ID, WAIT_IDS, bias_towards_wait, tiny_model

N_LAYERS, D = 4, 64
SLOW = pytest.mark.slow  # every test that uses ``model`` builds a tiny model
SAMPLING = SamplingConfig(temperature=1.0, top_p=0.95, top_k=64, max_new_tokens=10, seed=11)
_G = torch.Generator().manual_seed(5)
MEAN_VECS = (tuple(torch.randn(D, generator=_G).tolist()), tuple(torch.randn(D, generator=_G).tolist()))
UNIT = tuple((lambda v: v / v.norm())(torch.randn(D, generator=_G)).tolist())
SPECS = {  # kind -> strength -> the resolved spec
    "heads": lambda s: iv.HeadScale(((1, 2), (3, 0)), s),
    "mean": lambda w: iv.MeanAblation((("attn", 1), ("mlp", 2)), w, MEAN_VECS),
    "steer": lambda a: iv.Steer(2, UNIT, a, 3.0),
    "token_ban": lambda p: iv.LogitBan(WAIT_IDS, p),
}
ACTIVE = {"heads": 0.0, "mean": 1.0, "steer": 4.0, "token_ban": math.inf}


@pytest.fixture(scope="module", params=[pytest.param(a, marks=SLOW) for a in ("qwen2", "llama")])
def model(request):
    return bias_towards_wait(tiny_model(request.param))  # says "Wait" often: the ban has work to do


def state_for(model, conditions, rows, phase="decode") -> HookState:
    return HookState(
        scales=torch.ones(len(conditions), N_LAYERS, len(COMPONENTS)),
        row_condition=torch.tensor(rows),
        phase=phase,
        decode_only=True,
        tables=iv.intervention_tables(model, conditions),
    )


@torch.inference_mode()
def logits(model, x: torch.Tensor, state: HookState | None = None) -> torch.Tensor:
    if state is None:
        return model(x).logits
    with ablation_hooks(model, state):
        return model(x).logits


@pytest.mark.parametrize("kind", list(SPECS))
def test_only_decode_steps_and_own_rows(model, kind):
    x = torch.randint(0, 49152, (1, 6), generator=torch.Generator().manual_seed(1)).expand(4, 6)
    ref = logits(model, x)
    conds, rows = [[], [SPECS[kind](ACTIVE[kind])]], [0, 1, 1, 0]
    out = logits(model, x, state := state_for(model, conds, rows))
    assert torch.equal(out[[0, 3]], ref[[0, 3]])  # the other condition's rows: bit for bit
    assert not torch.equal(out[[1, 2]], ref[[1, 2]])
    if kind == "token_ban":
        assert (out[[1, 2]][..., list(WAIT_IDS)] == -math.inf).all()
        keep = torch.ones(out.shape[-1], dtype=torch.bool)
        keep[list(WAIT_IDS)] = False
        assert torch.equal(out[..., keep], ref[..., keep])
    assert sum(state.applied.values()) > 0
    prefill = state_for(model, conds, rows, phase="prefill")
    assert torch.equal(logits(model, x, prefill), ref)  # decode-only: the prefill is never touched
    assert not prefill.applied and sum(prefill.counts.values()) > 0


def test_noop_strengths_register_nothing(model):
    state = state_for(model, [[], *([SPECS[k](iv.NOOP[k])] for k in SPECS)], [0, 1, 2, 3, 4])
    assert state.tables is not None
    with ablation_hooks(model, state):
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_effects_are_what_the_docstrings_say(model):
    """Heads: every head of a layer at 0 = the attention block at 0; mean at weight 1 = the mean
    itself; steering adds alpha x norm x v to the layer's output."""
    x = torch.randint(0, 49152, (2, 5), generator=torch.Generator().manual_seed(2))
    all_heads = iv.HeadScale(tuple((1, h) for h in range(model.config.num_attention_heads)), 0.0)
    scales = torch.ones(2, N_LAYERS, len(COMPONENTS))
    scales[1, 1, COMPONENTS.index("attn")] = 0.0
    zero_attn = HookState(scales=scales, row_condition=torch.tensor([1, 1]), phase="decode")
    assert torch.equal(
        logits(model, x, state_for(model, [[], [all_heads]], [1, 1])), logits(model, x, zero_attn)
    )
    seen: dict[str, torch.Tensor] = {}
    for name, spec, module in (
        ("mean", SPECS["mean"](1.0), model.model.layers[2].mlp),
        ("steer", SPECS["steer"](2.0), model.model.layers[2]),
    ):
        ref_out: list[torch.Tensor] = []
        h = module.register_forward_hook(
            lambda _m, _i, o, acc=ref_out: acc.append(o[0] if isinstance(o, tuple) else o)
        )
        logits(model, x)
        h.remove()
        state = state_for(model, [[], [spec]], [1, 0])
        with ablation_hooks(model, state):  # an observer registered after the intervention's hook
            h = module.register_forward_hook(
                lambda _m, _i, o, n=name: seen.__setitem__(n, o[0] if isinstance(o, tuple) else o)
            )
            with torch.inference_mode():
                model(x)
            h.remove()
        if name == "mean":
            assert torch.equal(seen[name][0], torch.tensor(MEAN_VECS[1]).expand(5, D))
        else:
            want = ref_out[0][0] + 2.0 * 3.0 * torch.tensor(UNIT)
            assert torch.allclose(seen[name][0], want, atol=1e-5)
        assert torch.equal(seen[name][1], ref_out[0][1])


def requests(conditions: range, samples: int = 3) -> list[Request]:
    prompts = [
        tuple(torch.randint(0, 49152, (n,), generator=torch.Generator().manual_seed(n)).tolist())
        for n in (4, 7)
    ]
    return [
        Request(stable_key(f"p{p}"), s, c, prompt, tag=(p, s, c))
        for p, prompt in enumerate(prompts)
        for s in range(samples)
        for c in conditions
    ]


def test_engine_noop_equals_baseline_and_ban_holds(model):
    """Baseline, each kind at its no-op strength and each kind active, all in the same batches."""
    kinds = list(SPECS)
    conds = [[]] + [[SPECS[k](iv.NOOP[k])] for k in kinds] + [[SPECS[k](ACTIVE[k])] for k in kinds]
    state = HookState.empty()
    state.tables = iv.intervention_tables(model, conds)
    reqs = requests(range(len(conds)))
    table = torch.ones(len(conds), N_LAYERS, len(COMPONENTS))
    out = {
        c.request.tag: c.token_ids
        for b in generate(model, reqs, table, SAMPLING, [EOS_ID], EOS_ID, batch_size=64, hook_state_out=state)
        for c in b
    }
    base = {k[:2]: t for k, t in out.items() if k[2] == 0}
    assert any(t in WAIT_IDS for ts in base.values() for t in ts[1:])  # the baseline says "Wait"
    changed = []
    for c, k in enumerate(kinds, start=1):
        assert {k2[:2]: t for k2, t in out.items() if k2[2] == c} == base, k
        active = {k2[:2]: t for k2, t in out.items() if k2[2] == c + len(kinds)}
        if k != "token_ban":  # the first token comes from the shared prefill: only a logit offset moves it
            assert all(t[:1] == base[key][:1] for key, t in active.items()), k
        changed.append(active != base)
    assert any(changed)  # (a weak one may keep every token of this "Wait"-biased model)
    for name in ("heads", "attn_mean", "mlp_mean", "resid", "logits"):
        assert any(n for (phase, comp, _), n in state.applied.items() if (phase, comp) == ("decode", name))
    banned = {k2[:2]: t for k2, t in out.items() if k2[2] == 1 + len(kinds) + kinds.index("token_ban")}
    assert not any(t in WAIT_IDS for ts in banned.values() for t in ts)  # from the first token on
    assert not any(state.applied[k] for k in state.applied if k[0] == "prefill")


@SLOW
@pytest.mark.parametrize("scheduler", ["static", "continuous"])
def test_the_ban_holds_from_the_first_generated_token(scheduler):
    """A model that opens with "Wait" in most rows: the banned rows never emit a Wait id, the first
    token included (it is sampled from the shared prefill's logits, which the engine offsets per row);
    the baseline rows of the same batches keep their "Wait" openings."""
    model = bias_towards_wait(tiny_model("qwen2"), wait=14.0, eos=0.0)
    conds = [[], [SPECS["token_ban"](math.inf)]]
    state = HookState.empty()
    state.tables = iv.intervention_tables(model, conds)
    table = torch.ones(len(conds), N_LAYERS, len(COMPONENTS))
    opts = EngineOptions(scheduler=scheduler)
    reqs = requests(range(2), samples=4)
    done = generate(model, reqs, table, SAMPLING, [EOS_ID], EOS_ID, hook_state_out=state, options=opts)
    out = {c.request.tag: c.token_ids for b in done for c in b}
    first = {c: [t[0] for k, t in out.items() if k[2] == c] for c in (0, 1)}
    assert sum(t in WAIT_IDS for t in first[0]) >= len(first[0]) // 2  # the baseline opens with "Wait"
    assert not any(t in WAIT_IDS for k, ts in out.items() if k[2] == 1 for t in ts)


def test_first_token_logits(model):
    state = state_for(model, [[], [SPECS["token_ban"](math.inf)]], [0, 1, 0])
    x = torch.randn(3, 49152)
    y = first_token_logits(state, x)
    assert torch.equal(y[[0, 2]], x[[0, 2]]) and (y[1, list(WAIT_IDS)] == -math.inf).all()
    assert first_token_logits(HookState.empty(), x) is x


def test_bad_entries_name_their_key(model, demo_tokenizer):
    bad_head = iv.HeadScale(((1, 13),), 0.0, "phase2.interventions.2.heads")
    with pytest.raises(ValueError, match=r"phase2.interventions.2.heads: head 13 out of range for 4 heads"):
        iv.intervention_tables(model, [[bad_head]])
    with pytest.raises(ValueError, match=r"interventions.1.layer: layer 9 out of range"):
        iv.intervention_tables(model, [[iv.Steer(9, UNIT, 1.0, 1.0, "phase2.interventions.1.layer")]])
    with pytest.raises(ValueError, match=r"interventions.0.triggers.1: trigger 'Qzxqzx"):
        iv.trigger_token_ids(demo_tokenizer, ["Wait", "Qzxqzx wrong"], "phase2.interventions.0.triggers")
    steer = type("Cfg", (), {"name": "s", "kind": "steer", "layer": "auto", "strengths": [2.0]})()
    with pytest.raises(ValueError, match=r"phase2.interventions.0.strengths: steering needs a vector"):
        iv.intervention_cells([steer], model=model)


def test_trigger_family(demo_tokenizer):
    ids = iv.trigger_token_ids(demo_tokenizer, ["Wait"], "k")
    assert set(WAIT_IDS) <= set(ids)
    assert all(demo_tokenizer.decode([i]).strip().lower() == "wait" for i in ids)


def test_cells_from_the_profile(model, demo_tokenizer, tmp_path):
    from bt_assets.config import load_profile
    from bt_assets.lib.component_means import means_frame
    from bt_assets.lib.steering import STEERING_SCHEMA

    body = """phase2:
  interventions:
    - {name: zero_mlp, kind: scale, subset: top_mlp, strengths: [0, 1]}
    - {name: mean_mlp, kind: mean, subset: top_mlp, strengths: [0, 1]}
    - {name: heads_top, kind: heads, heads: [[0, 1]], from_head_scan: 2, strengths: [0]}
    - {name: steer_auto, kind: steer, strengths: [-2, 0, 2]}
    - {name: ban_wait, kind: token_ban, strengths: [inf, 3]}
"""
    (tmp_path / "p.yaml").write_text("extends: demo\n" + body)
    cfgs = load_profile(str(tmp_path / "p.yaml")).phase2.interventions
    steering = pl.DataFrame(
        [{"layer": 3, "auc_heldout": 0.9, "act_norm_mean": 2.5, "vector": list(UNIT)}]
        + [{"layer": 1, "auc_heldout": 0.6, "act_norm_mean": 1.0, "vector": [0.0] * D}],
        schema={k: STEERING_SCHEMA[k] for k in ("layer", "auc_heldout", "act_norm_mean", "vector")},
    )
    resolve = dict(
        tokenizer=demo_tokenizer,
        subsets={
            "top_mlp": type(
                "S", (), {"components": [], "from_selected": "mlp", "top": 1, "name": "top_mlp"}
            )()
        },
        selected={"mlp": [2, 0], "attn": [1]},
        means=means_frame(torch.randn(N_LAYERS, 2, D), 10, 2),
        steering=steering,
        head_ranking=[(3, 3), (2, 0), (1, 1)],
        default_triggers=["Wait", "Actually"],
    )
    cells = iv.intervention_cells(cfgs, model=model, **resolve)
    # reading stored cells resolves them without the weights: the same cells, so the same fingerprints
    unchecked = iv.intervention_cells(cfgs, model=None, **resolve)
    assert [(c.key, c.scales, c.interventions) for c in unchecked] == [
        (c.key, c.scales, c.interventions) for c in cells
    ]
    assert [c.key for c in cells] == iv.cell_keys(cfgs)
    assert cells[0].key == iv.BASELINE_KEY and cells[0].noop
    by = {c.key: c for c in cells}
    assert by["intervention=zero_mlp,strength=0"].scales == {("mlp", 2): 0.0}
    assert by["intervention=zero_mlp,strength=1"].noop and by["intervention=mean_mlp,strength=0"].noop
    assert by["intervention=heads_top,strength=0"].interventions[0].heads == ((0, 1), (2, 0), (3, 3))
    steer = by["intervention=steer_auto,strength=-2"].interventions[0]
    assert (steer.layer, steer.norm, steer.alpha) == (3, 2.5, -2.0)
    ban = by["intervention=ban_wait,strength=inf"].interventions[0]
    assert set(WAIT_IDS) <= set(ban.token_ids) and ban.penalty == math.inf
    assert iv.generation_cell(by["intervention=ban_wait,strength=3"], "v", pl.DataFrame()).condition.endswith(
        "=3"
    )


def _old_fingerprint(store: GenerationStore, cell: Cell) -> str:
    """``GenerationStore.fingerprint`` as it was before interventions existed."""
    blob = json.dumps(
        {
            "model": dict(store.identity),
            "sampling": store.sampling.__dict__,
            "samples": store.samples,
            "chunk_problems": store.chunk_problems,
            "condition": cell.condition,
            "scales": sorted((c, int(layer), float(s)) for (c, layer), s in cell.scales.items()),
            "prompts": cell.prompts.sort("example_id")["prompt_hash"].to_list(),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def test_fingerprints(tmp_path):
    store = GenerationStore(tmp_path, {"id": "m"}, SAMPLING, 2, 4, False)
    prompts = pl.DataFrame({"example_id": [1, 0], "prompt_hash": ["b", "a"]})
    plain = Cell("k", "v", "c", prompts, {("mlp", 1): 0.0})
    assert store.fingerprint(plain) == _old_fingerprint(store, plain)  # chunk stores on disk stay valid
    a, b = SPECS["steer"](2.0), SPECS["token_ban"](math.inf)
    with_ivs = Cell("k", "v", "c", prompts, {("mlp", 1): 0.0}, (a, b))
    assert store.fingerprint(with_ivs) != store.fingerprint(plain)
    assert store.fingerprint(with_ivs) == store.fingerprint(
        Cell("k", "v", "c", prompts, {("mlp", 1): 0.0}, (b, a))
    )
    assert store.fingerprint(with_ivs) != store.fingerprint(
        Cell("k", "v", "c", prompts, {("mlp", 1): 0.0}, (SPECS["steer"](-2.0), b))
    )


def test_store_runs_intervention_cells(model, demo_tokenizer, tmp_path):
    """``GenerationStore.run`` builds the tables from the cells: no-op cells equal the baseline, the ban
    holds, each chunk's hook sidecar counts the interventions' hooks (none applied in the prefill)."""
    prompts = pl.DataFrame(
        {"example_id": [0, 1], "prompt": ["What is 2 + 3?", "Add 4 and 5."], "prompt_hash": ["a", "b"]}
    ).with_columns(prompt_tokens=pl.lit(8))
    frontier = [
        iv.InterventionCell(iv.BASELINE_KEY, "baseline", "baseline", 0.0, {}, ()),
        iv.InterventionCell("intervention=s,strength=0", "s", "steer", 0.0, {}, (SPECS["steer"](0.0),)),
        iv.InterventionCell(
            "intervention=b,strength=inf", "b", "token_ban", math.inf, {}, (SPECS["token_ban"](math.inf),)
        ),
        iv.InterventionCell(
            "intervention=b,strength=0", "b", "token_ban", 0.0, {}, (SPECS["token_ban"](0.0),)
        ),
    ]
    cells = [iv.generation_cell(c, "v", prompts) for c in frontier]
    store = GenerationStore(tmp_path, {"id": "tiny"}, SAMPLING, 3, 1, False)
    store.run(
        model, demo_tokenizer, cells, batch_size=64, eos_ids=[EOS_ID], provenance={}, log=lambda _m: None
    )
    rows = store.read(cells).sort("cell", "example_id", "sample_id")
    ids = {
        k: rows.filter(pl.col("cell") == k)["completion_token_ids"].to_list() for k in rows["cell"].unique()
    }
    assert ids[cells[1].key] == ids[cells[3].key] == ids[cells[0].key]
    assert not any(t in WAIT_IDS for ts in ids[cells[2].key] for t in ts[1:])
    counts = store.hook_counts(cells)
    ban = counts.filter((pl.col("cell") == cells[2].key) & (pl.col("component") == "logits"))
    assert ban.filter(pl.col("phase") == "decode")["applied"].sum() > 0
    assert counts.filter(pl.col("phase") == "prefill")["applied"].sum() == 0
