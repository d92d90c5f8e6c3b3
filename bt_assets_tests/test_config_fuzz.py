"""Bad profiles fail at load with a ConfigError naming the dotted key, never another exception, and no
unknown key is ever accepted: targeted cases, then hypothesis mutations of the resolved demo profile."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bt_assets.config import CONFIG_DIR, ConfigError, Profile, _read_raw, load_profile


def load_text(tmp_path: Path, text: str, name: str = "p.yaml") -> Profile:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_profile(str(path))


def fails(tmp_path: Path, body: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, "extends: demo\n" + body)
    return str(err.value)


# bodies under ``extends: demo``: the prefixes of the phase2 entries below
SUBSET = "phase2:\n  subsets:\n    - "
SWEEP_KEY = "  scale_sweep: {subset: selected_mlp, "
SWEEP, ALLOWED = "phase2:\n" + SWEEP_KEY, "phase2:\n  allow_scale_above_one: true\n" + SWEEP_KEY
CONT = "phase2:\n  continuation: {subset: top_mlp, "
CASES = {
    # wrong types
    "str_for_int": ("generation:\n  max_new_tokens: ten\n", "generation.max_new_tokens"),
    "list_for_int": ("run:\n  seed: [1]\n", "run.seed"),
    "str_for_bool": ("model:\n  add_bos: maybe\n", "model.add_bos"),
    "float_for_int": ("dataset:\n  n: 2.5\n", "dataset.n"),
    "str_for_float": ("generation:\n  temperature: hot\n", "generation.temperature"),
    "str_for_list": ("phase2:\n  subsets: top_mlp\n", "phase2.subsets"),
    "int_for_name": ("prompting:\n  variants:\n    - {name: 5}\n", "prompting.variants.0.name"),
    "list_for_section": ("paths: [a, b]\n", "paths"),
    "scalar_for_section": ("generation: 7\n", "generation"),
    "bad_literal": ("ablation:\n  mode: halve\n", "ablation.mode"),
    "bad_union": ("analysis:\n  layers: some\n", "analysis.layers"),
    "dict_for_tuple": (SUBSET + "{name: x, components: [{mlp: 3}]}\n", "phase2.subsets.0.components.0"),
    # unknown keys at every depth
    "unknown_top": ("bogus: 1\n", "bogus: unknown key"),
    "unknown_section": ("generation:\n  max_new_tokns: 5\n", "generation.max_new_tokns: unknown key"),
    "unknown_nested": (SWEEP + "scale: [0.5]}\n", "phase2.scale_sweep.scale: unknown key"),
    "unknown_in_list": (
        SUBSET + "{name: x, from_selected: mlp, layer: 3}\n",
        "phase2.subsets.0.layer: unknown key",
    ),
    "unknown_in_variant": (
        "prompting:\n  variants:\n    - {name: a, think: x}\n",
        "prompting.variants.0.think: unknown key",
    ),
    "unknown_int_key": ("detection:\n  3: x\n", "detection.3: Keys should be strings"),
    # negative / zero sizes
    "zero_batch": ("generation:\n  batch_size: 0\n", "generation.batch_size"),
    "negative_n": ("dataset:\n  n: -5\n", "dataset.n"),
    "negative_samples": ("generation:\n  samples_per_prompt: -1\n", "generation.samples_per_prompt"),
    "zero_min_events": ("analysis:\n  min_events_for_claims: 0\n", "analysis.min_events_for_claims"),
    "zero_problems": ("phase2:\n  n_problems: 0\n", "phase2.n_problems"),
    "negative_topk": ("analysis:\n  topk: -1\n", "analysis.topk"),
    "negative_top_k": ("generation:\n  top_k: -1\n", "generation.top_k"),
    "zero_subset_top": (SUBSET + "{name: x, from_selected: mlp, top: 0}\n", "phase2.subsets.0.top"),
    "negative_layer": (SUBSET + "{name: x, components: [[mlp, -1]]}\n", "phase2.subsets.0.components.0.1"),
    "zero_chunk": ("generation:\n  chunk_problems: 0\n", "generation.chunk_problems"),
    "negative_events": (CONT + "max_events: -1}\n", "phase2.continuation.max_events"),
    "zero_num_layers": ("model:\n  num_layers: 0\n", "model.num_layers"),
    "more_problems_than_dataset": ("phase2:\n  n_problems: 25\n", "phase2.n_problems"),
    # empty things
    "empty_subset": (SUBSET + "{name: empty}\n", "phase2.subsets.0: subset 'empty' is empty"),
    "empty_components": (SUBSET + "{name: empty, components: []}\n", "subset 'empty' is empty"),
    "no_variants": ("prompting:\n  variants: []\n", "prompting.variants"),
    "no_strict_triggers": ("detection:\n  triggers_strict: []\n", "detection.triggers_strict"),
    "empty_trigger": ("detection:\n  triggers_relaxed: [Wait, '']\n", "detection.triggers_relaxed.1"),
    "no_scales": (SWEEP + "scales: []}\n", "phase2.scale_sweep.scales"),
    "no_components": ("analysis:\n  components: []\n", "analysis.components"),
    "no_layers": ("analysis:\n  layers: []\n", "analysis.layers"),
    "no_seeds": ("ablation:\n  random_seeds: []\n", "ablation.random_seeds"),
    "no_conditions": ("phase1:\n  conditions: []\n", "phase1.conditions"),
    # layers out of range (checked at load when the profile declares model.num_layers)
    "subset_layer_out_of_range": (
        "model:\n  num_layers: 30\n" + SUBSET + "{name: x, components: [[attn, 3], [mlp, 30]]}\n",
        "phase2.subsets.0.components.1: mlp layer 30 out of range for a 30-layer model",
    ),
    "analysis_layer_out_of_range": (
        "model:\n  num_layers: 30\nanalysis:\n  layers: [0, 31]\n",
        "analysis.layers.1: layer 31 out of range",
    ),
    # scales outside [0, 1]
    "ablation_scale": ("ablation:\n  scale: 1.5\n", "ablation.scale"),
    "scan_scale": ("analysis:\n  scan_scale: -0.1\n", "analysis.scan_scale"),
    "sweep_scale_above_one": (SWEEP + "scales: [0.0, 1.2]}\n", "phase2.scale_sweep.scales.1: 1.2 is above 1"),
    "continuation_scale_above_one": (CONT + "scales: [2.0]}\n", "phase2.continuation.scales.0"),
    "negative_scale_even_if_allowed": (ALLOWED + "scales: [-0.5]}\n", "phase2.scale_sweep.scales.0"),
    "top_p_above_one": ("generation:\n  top_p: 1.5\n", "generation.top_p"),
    "infinite_temperature": ("generation:\n  temperature: .inf\n", "generation.temperature"),
    "nan_top_p": ("generation:\n  top_p: .nan\n", "generation.top_p"),
    # duplicates
    "duplicate_subsets": (
        SUBSET + "{name: a, from_selected: mlp}\n    - {name: a, from_selected: attn}\n",
        "phase2.subsets: duplicate names",
    ),
    "duplicate_variants": ("prompting:\n  variants: [{name: a}, {name: a}]\n", "prompting.variants"),
    "duplicate_scales": (SWEEP + "scales: [0.5, 0.50000001]}\n", "phase2.scale_sweep.scales: duplicate"),
    "duplicate_seeds": ("ablation:\n  random_seeds: [7, 7]\n", "ablation.random_seeds"),
    "duplicate_conditions": ("phase1:\n  conditions: [baseline, baseline]\n", "phase1.conditions"),
    "duplicate_components": ("analysis:\n  components: [mlp, mlp]\n", "analysis.components"),
    # missing files
    "jsonl_without_path": ("dataset:\n  source: jsonl\n", "dataset.path is required"),
    "jsonl_missing_file": ("dataset:\n  source: jsonl\n  path: /nonexistent.jsonl\n", "dataset.path"),
    "jsonl_path_is_dir": ("dataset:\n  source: jsonl\n  path: /\n", "dataset.path"),
    "jsonl_path_too_long": ("dataset:\n  source: jsonl\n  path: " + "a" * 5000 + "\n", "dataset.path"),
    "jsonl_path_unknown_user": ("dataset:\n  source: jsonl\n  path: ~no_such_user_bt/x\n", "dataset.path"),
    "import_dir_missing": ("phase1:\n  import_dir: /nonexistent\n", "phase1.import_dir"),
    "import_dir_unknown_user": ("phase1:\n  import_dir: ~no_such_user_bt\n", "phase1.import_dir"),
    # names that end up in partition keys
    "variant_with_comma": ("prompting:\n  variants: [{name: 'a,b'}]\n", "prompting.variants.0.name"),
    "variant_with_equals": ("prompting:\n  variants: [{name: 'a=b'}]\n", "prompting.variants.0.name"),
    "variant_empty": ("prompting:\n  variants: [{name: ''}]\n", "prompting.variants.0.name"),
    "subset_with_space": (SUBSET + "{name: 'a b', from_selected: mlp}\n", "phase2.subsets.0.name"),
    "subset_named_baseline": (SUBSET + "{name: baseline, from_selected: mlp}\n", "phase2.subsets.0.name"),
    "unknown_component": (SUBSET + "{name: x, components: [[ffn, 3]]}\n", "phase2.subsets.0.components"),
    "unknown_sweep_subset": ("phase2:\n  scale_sweep: {subset: nope}\n", "phase2.scale_sweep.subset"),
    "unknown_phase2_variant": ("phase2:\n  variant: nope\n", "phase2.variant"),
    "unknown_ablation_variant": ("phase1:\n  ablation_variant: nope\n", "phase1.ablation_variant"),
    "unknown_analysis_variant": ("analysis:\n  variant: missing_variant\n", "analysis.variant"),
    "bad_condition": ("phase1:\n  conditions: [baseline, zero_all]\n", "phase1.conditions.1"),
    # values that would only fail deep inside a run
    "bad_regex": ("detection:\n  answer_regex: '(unclosed'\n", "detection.answer_regex"),
    "bad_cron": ("phase2:\n  schedule_cron: every night\n", "phase2.schedule_cron"),
    "template_without_question": ("prompting:\n  template: 'Solve it.'\n", "prompting.template"),
    "drop_line_not_in_template": (
        "prompting:\n  variants: [{name: a, drop_lines: [Not a line]}]\n",
        "prompting.variants.0.drop_lines.0",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_profile_fails_at_load_naming_the_key(tmp_path, case):
    body, key = CASES[case]
    msg = fails(tmp_path, body)
    assert key in msg, msg
    assert "<root>" not in msg and len(msg) < 4000, msg  # names keys, values cut to a readable length


def test_scales_above_one_only_when_allowed(tmp_path):
    body = ALLOWED + "scales: [0, 1, 1.5]}\n"
    prof = load_text(tmp_path, "extends: demo\n" + body)
    assert prof.phase2.scale_sweep.scales == [0.0, 1.0, 1.5]
    assert "phase2.scale_sweep.scales.2" in fails(tmp_path, body.replace("true", "false"))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("extends: no_such_profile\n", "extends: profile 'no_such_profile' not found"),
        ("extends: [demo]\n", "extends: must be a profile name or path"),
        ("extends: " + "x" * 5000 + ".yaml\n", "extends: profile"),
        ("extends: ~no_such_user_bt/p.yaml\n", "extends: profile"),
        ("- just\n- a list\n", "a profile must be a mapping"),
        ("generation: {max_new_tokens: 5\n", "invalid YAML"),
    ],
)
def test_bad_files_and_extends(tmp_path, text, expected):
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, text)
    assert expected in str(err.value) and len(str(err.value)) < 1000


def test_unreadable_profile_files(tmp_path):
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="cannot read"):
        load_profile(str(tmp_path / "bin.yaml"))
    with pytest.raises(ConfigError, match="not found"):
        load_profile(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="not found"):
        load_profile(str(tmp_path))  # a directory is not a profile


def test_layers_checked_when_the_model_loads(tmp_path):
    """Without model.num_layers the layer count is only known once the model loads: the GPU assets
    call Profile.check_layers, whose ConfigError names every bad key."""
    body = (
        SUBSET
        + "{name: top_mlp, components: [[attn, 3], [mlp, 9]]}\n"
        + "    - {name: selected_mlp, from_selected: mlp}\n"
        + "analysis:\n  layers: [0, 4]\n"
    )
    prof = load_text(tmp_path, "extends: demo\n" + body)
    prof.check_layers(10)
    with pytest.raises(ConfigError) as err:
        prof.check_layers(4)
    msg = str(err.value)
    assert "phase2.subsets.0.components.1: mlp layer 9 out of range for a 4-layer model" in msg
    assert "analysis.layers.1: layer 4 out of range" in msg and "components.0" not in msg
    declared = load_text(tmp_path, "extends: demo\nmodel: {num_layers: 30}\n", "d.yaml")
    declared.check_layers(30)
    with pytest.raises(ConfigError, match=r"model.num_layers: 30, but the model has 4 layers"):
        declared.check_layers(4)
    load_profile("demo").check_layers(30)  # SmolLM2-135M: 30 layers
    load_profile("paper").check_layers(28)  # R1-Distill-Qwen-1.5B: 28 layers


# --- hypothesis: random mutations of the resolved demo profile ------------------------------------

BASE: dict[str, Any] = {k: v for k, v in _read_raw(CONFIG_DIR / "demo.yaml").items() if k != "extends"}
SHAPE: dict[str, Any] = load_profile("demo").model_dump(mode="json")


def _field_names(model: type, seen: set[type] | None = None) -> set[str]:
    """Every field name of the schema (so inserted keys are often real keys at the wrong depth)."""
    seen = seen if seen is not None else set()
    seen.add(model)
    names = set(model.model_fields)
    for f in model.model_fields.values():
        for arg in getattr(f.annotation, "__args__", ()) + (f.annotation,):
            for sub in (arg, *getattr(arg, "__args__", ())):
                if isinstance(sub, type) and hasattr(sub, "model_fields") and sub not in seen:
                    names |= _field_names(sub, seen)
    return names


KEYS = sorted(_field_names(Profile)) + ["bogus", "max_new_tokns", "Wait", "extends", "profile_name"]
STRINGS = [
    "",
    "demo",
    "paper",
    "no_such_profile",
    "synthetic",
    "jsonl",
    "hf",
    "all",
    "attn",
    "mlp",
    "baseline",
    "scale",
    "zero",
    "corrected",
    "seed_compatible",
    "top_mlp",
    "selected_mlp",
    "{question}",
    "(",
    "a,b=c",
    "0 2 * * *",
    "~no_such_user_bt/x",
    "../nope.yaml",
    "/",
    "a" * 3000,
    "\x00",
    "Wait",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 40),
    st.sampled_from([-(10**30), 10**30, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(STRINGS),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.integers(0, 3), inner, max_size=3)
    ),
    max_leaves=6,
)


def _walk(tree: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """(path, node) of the root and every node below it."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    return [(path, tree)] + [pair for k, v in items for pair in _walk(v, (*path, k))]


def _nodes(tree: Any) -> list[tuple]:
    """Paths of every node below the root (what can be deleted or swapped)."""
    return [path for path, _ in _walk(tree) if path]


def _containers(tree: Any) -> list[tuple]:
    """Paths of every mapping, the root included (where a key can be inserted)."""
    return [path for path, node in _walk(tree) if isinstance(node, dict)]


def _get(tree: Any, path: tuple) -> Any:
    for k in path:
        tree = tree[k]
    return tree


def _copy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _copy(v) for k, v in tree.items()}
    return [_copy(v) for v in tree] if isinstance(tree, list) else tree


def _shape_at(path: tuple) -> Any:
    """The demo profile's value at ``path`` (list items: the first item's shape), or None."""
    node: Any = SHAPE
    for k in path:
        if isinstance(node, dict) and k in node:
            node = node[k]
        elif isinstance(node, list) and isinstance(k, int) and node:
            node = node[0]
        else:
            return None
    return node


def _unknown_keys(tree: Any, path: tuple = ()) -> list[tuple]:
    """Paths of keys that no schema model at that place has (compared with the demo's full dump)."""
    out = []
    shape = _shape_at(path)
    if isinstance(shape, list | dict) and not isinstance(tree, type(shape)):
        return out  # a mapping where a list belongs (or the reverse): rejected whole, never looked into
    if isinstance(tree, dict):
        # k8s pod configs are free-form; phase2.interventions items are a union whose keys differ by kind
        if isinstance(shape, dict) and path[:1] != ("k8s",) and path[-2:-1] != ("interventions",):
            out += [(*path, k) for k in tree if k not in shape]
        for k, v in tree.items():
            out += _unknown_keys(v, (*path, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _unknown_keys(v, (*path, i))
    return out


def _accepted_unknown(raw: Any, dumped: Any, path: tuple = ()) -> list[tuple]:
    """Keys of the raw profile that did not survive into the validated profile (silently dropped)."""
    out = []
    if isinstance(raw, dict):
        if not isinstance(dumped, dict):
            return [path]
        for k, v in raw.items():
            out += _accepted_unknown(v, dumped[k], (*path, k)) if k in dumped else [(*path, k)]
    elif isinstance(raw, list) and isinstance(dumped, list | tuple):
        for i, (a, b) in enumerate(zip(raw, dumped, strict=False)):
            out += _accepted_unknown(a, b, (*path, i))
    return out


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_profiles_load_or_raise_config_error(tmp_path_factory, data):
    raw = _copy(BASE)
    for _ in range(data.draw(st.integers(1, 3), label="n_mutations")):
        kind = data.draw(st.sampled_from(["delete", "insert", "swap"]), label="kind")
        if kind == "delete":
            path = data.draw(st.sampled_from(_nodes(raw)), label="delete")
            parent = _get(raw, path[:-1])
            del parent[path[-1]]
        elif kind == "insert":
            where = data.draw(st.sampled_from(_containers(raw)), label="into")
            key = data.draw(st.sampled_from(KEYS) | st.integers(0, 3), label="key")
            _get(raw, where)[key] = data.draw(values, label="value")
        else:
            path = data.draw(st.sampled_from(_nodes(raw)), label="swap")
            _get(raw, path[:-1])[path[-1]] = data.draw(values, label="value")
    text = yaml.safe_dump(raw, allow_unicode=True, sort_keys=False)
    written = yaml.safe_load(text)  # what load_profile will actually read
    path = tmp_path_factory.mktemp("fuzz") / "p.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        prof = load_profile(str(path))
    except ConfigError as err:
        msg = str(err)
        if msg.startswith("invalid profile"):  # schema stage: every line names a key
            lines = msg.splitlines()[1:]
            assert lines and all(":" in line and "<root>" not in line for line in lines), msg
            unknown = _unknown_keys(written) if isinstance(written, dict) else []
            for key in unknown:
                if not isinstance(_get(written, key[:-1]), dict) or _shape_at(key[:-1]) is None:
                    continue
                named = f"{_dotted(key)}: {'unknown key' if isinstance(key[-1], str) else ''}"
                assert named in msg, (key, msg)
        return
    # loaded: nothing was silently dropped, and the values obey the schema's own bounds
    dumped = prof.model_dump(mode="json")
    assert _accepted_unknown({**written, "profile_name": dumped["profile_name"]}, dumped) == []
    g = prof.generation
    assert g.max_new_tokens > 0 and (g.batch_size is None or g.batch_size > 0)  # None: planned from memory
    assert math.isfinite(g.temperature) and 0 < g.top_p <= 1
    assert prof.phase2.n_problems <= prof.dataset.n
