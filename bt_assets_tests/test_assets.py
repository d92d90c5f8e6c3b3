"""The whole graph through Dagster on a tiny random model: every asset materializes in waves of
single runs, outputs land on disk, checks pass, and a rerun reuses every generation chunk."""

from __future__ import annotations

import json
import re

import dagster as dg
import polars as pl
import pytest
from PIL import Image

from bt_assets.definitions import build_definitions
from bt_assets.launch import materialize_all, plan_waves
from bt_assets_tests.conftest import check_record, tiny_profile, tmp_instance, wait_biased_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_dirs):
    tmp = tmp_path_factory.mktemp("graph")
    profile = tiny_profile(tmp, tiny_dirs["qwen2"])
    defs = build_definitions(profile, model=wait_biased_model(profile.source))
    with tmp_instance(tmp) as instance:
        ok = materialize_all(defs, instance)
        yield profile, defs, instance, ok


def test_whole_graph_materializes(run):
    profile, defs, instance, ok = run
    assert ok
    graph = defs.resolve_asset_graph()
    for key in graph.materializable_asset_keys:
        assert instance.get_latest_materialization_event(key) is not None, key


def test_generations_on_disk_with_true_lengths(run):
    profile, *_ = run
    storage = profile.path("storage")
    events = pl.read_parquet(storage / "phase1_events.parquet")
    n = profile.dataset.n * profile.generation.samples_per_prompt
    counts = events.group_by("variant", "condition").len()
    assert set(counts["len"]) == {n}
    assert counts.height == 3 + 2  # three baseline variants, targeted and random ablation
    assert events["completion_tokens"].max() <= profile.generation.max_new_tokens
    assert set(events["finish_reason"]) <= {"stop", "length"}
    assert events["has_backtracking_strict"].sum() > 0  # the biased model does say "Wait"


def test_figures_are_pictures_and_reports_embed_them(run):
    profile, defs, instance, _ = run
    figs = sorted(profile.path("figures").glob("*.png"))
    assert len(figs) == 10, [p.name for p in figs]
    for path in figs:  # decodable pictures of a readable size, not empty or broken files
        with Image.open(path) as image:
            image.verify()
            assert image.format == "PNG" and image.width > 200 and image.height > 100, path.name
    for key in defs.resolve_asset_graph().materializable_asset_keys:
        if key.path[0].startswith("fig_"):
            meta = instance.get_latest_materialization_event(key).asset_materialization.metadata
            assert meta["path"].value.endswith(".png") and "data:image/png;base64," in meta["preview"].value
    for name in ("phase1_report.md", "phase2_report.md"):  # each embeds figures by a path that resolves
        report = profile.path("reports") / name
        text = report.read_text()
        links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
        assert profile.config_hash() in text and links and "figure not produced" not in text, name
        assert {(report.parent / link).resolve() for link in links} <= {p.resolve() for p in figs}, name


def test_sweep_checks_pass_and_scale_one_equals_baseline(run):
    profile, defs, instance, _ = run
    for check in ("scale_one_equals_baseline", "decode_only_hooks"):
        asset = "sweep_results" if check.startswith("scale") else "hook_stats"
        rec = check_record(instance, dg.AssetCheckKey(dg.AssetKey(asset), check))
        assert rec.status.value == "SUCCEEDED" and rec.evaluation.passed, check


def test_rerun_reuses_every_chunk(run):
    profile, defs, instance, _ = run
    waves = plan_waves(defs, {dg.AssetKey("phase1_generations")})
    assert len(waves) == 1
    from bt_assets.launch import run_wave

    assert run_wave(defs, waves[0], instance)
    mat = instance.get_latest_materialization_event(dg.AssetKey("phase1_generations")).asset_materialization
    assert mat.metadata["new_rows"].value == 0 and mat.metadata["chunks_written"].value == 0


def test_selected_and_random_layers_persisted(run):
    profile, *_ = run
    storage = profile.path("storage")
    selected = json.loads((storage / "selected_layers.json").read_text())
    randoms = json.loads((storage / "random_layers.json").read_text())
    assert set(randoms) == {"999", "1000"}
    for draw in randoms.values():
        for comp, layers in draw.items():
            assert not set(layers) & set(selected[comp])
