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
from bt_assets.lib.chunkstore import safe_name
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
    assert counts.height == 3 + 3  # three baseline variants, targeted ablation, one random per seed
    assert events["completion_tokens"].max() <= profile.generation.max_new_tokens
    assert set(events["finish_reason"]) <= {"stop", "length"}
    assert events["has_backtracking_strict"].sum() > 0  # the biased model does say "Wait"


def test_figures_are_pictures_and_reports_embed_them(run):
    profile, defs, instance, _ = run
    figs = sorted(profile.path("figures").glob("*.png"))
    fig_assets = [
        k for k in defs.resolve_asset_graph().materializable_asset_keys if k.path[0].startswith("fig_")
    ]
    assert len(figs) == len(fig_assets) >= 12, [p.name for p in figs]  # onset phrases and resamples too
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
    event = instance.get_latest_materialization_event(dg.AssetKey("phase1_generations"))
    mat = event.asset_materialization
    assert mat.metadata["new_rows"].value == 0 and mat.metadata["chunks_written"].value == 0
    logs = [e.user_message for e in instance.all_logs(event.run_id)]
    assert any("the model is not loaded" in m for m in logs)  # every chunk reused: no model load
    assert not any(m.startswith("loading model") for m in logs)


def test_tables_carry_standard_metadata_and_reports_embed_figures(run):
    """Dagster's own keys: row count, column schema (from the polars schema), a table preview; reports
    render with their figures inline; a stored value's data version is its content hash."""
    profile, defs, instance, _ = run
    for name in ("problems", "prompts"):
        meta = instance.get_latest_materialization_event(dg.AssetKey(name)).asset_materialization.metadata
        frame = pl.read_parquet(profile.path("storage") / f"{name}.parquet")
        assert meta["dagster/row_count"].value == frame.height, name
        schema = meta["dagster/column_schema"].value
        assert [c.name for c in schema.columns] == frame.columns, name
        assert isinstance(meta["preview"], dg.TableMetadataValue), name
    for name in ("phase1_report", "phase2_report"):
        meta = instance.get_latest_materialization_event(dg.AssetKey(name)).asset_materialization.metadata
        assert "data:image/png;base64," in meta["report"].value and "](../" not in meta["report"].value
    mat = instance.get_latest_materialization_event(dg.AssetKey("selected_layers")).asset_materialization
    assert mat.tags and mat.tags.get("dagster/data_version"), "selected_layers reports a content version"


def test_selected_and_random_layers_persisted(run):
    profile, *_ = run
    storage = profile.path("storage")
    selected = json.loads((storage / "selected_layers.json").read_text())
    randoms = json.loads((storage / "random_layers.json").read_text())
    assert set(randoms) == {"999", "1000"}
    for draw in randoms.values():
        for comp, layers in draw.items():
            assert not set(layers) & set(selected[comp])


def test_every_random_seed_is_a_generated_paired_control(run):
    """Each seed of ``ablation.random_seeds`` is its own generated condition, scaled by its own layer
    set, on the same (problem, sample) keys as the baseline; the report shows each and the pooled one."""
    profile, *_ = run
    storage = profile.path("storage")
    events = pl.read_parquet(storage / "phase1_events.parquet").filter(
        pl.col("variant") == profile.ablation_variant
    )
    keys = {
        c: set(events.filter(pl.col("condition") == c).select("example_id", "sample_id").iter_rows())
        for c in ("baseline", "random_ablation_s999", "random_ablation_s1000")
    }
    assert keys["random_ablation_s999"] == keys["random_ablation_s1000"] == keys["baseline"]
    cells = {p.name for p in (storage / "ablation_generations").iterdir()}
    keys = {f"variant={profile.ablation_variant},condition=random_ablation_s{s}" for s in (999, 1000)}
    assert {safe_name(k) for k in keys} <= cells
    report = (profile.path("reports") / "phase1_report.md").read_text()
    for cond in ("random_ablation_s999", "random_ablation_s1000", "random_ablation_pooled"):
        assert f"| {cond} |" in report and f"{cond}: BT" in report, cond


def test_phase2_report_has_the_onset_stages(run):
    """Onset resamples (stability, paired change), continuation drops and per-cell onset phrases."""
    profile, *_ = run
    text = (profile.path("reports") / "phase2_report.md").read_text()
    assert "## Onset resamples" in text and "(the onsets' stability)" in text
    assert "Changes are paired per event" in text and "p_onset_drop_mean" in text
    assert "| onset_phrases |" in text or "onset_phrases |" in text
    resamples = pl.read_parquet(profile.path("storage") / "onset_resamples.parquet")
    assert set(resamples["condition"]) == {"clean", "ablated"} and resamples.height > 0


def test_every_intervention_family_is_on_the_frontier(run):
    """Each configured kind has its cells on the frontier (paired with the baseline cell), no-op cells
    equal the baseline token for token, the figure exists and the report names the frontier."""
    profile, defs, instance, _ = run
    table = pl.read_parquet(profile.path("storage") / "intervention_results.parquet")
    assert {c.kind for c in profile.phase2.interventions} | {"baseline"} == set(table["kind"])
    assert table["n"].min() == profile.phase2.n_problems * profile.phase2.samples_per_prompt
    assert table.filter(pl.col("pareto")).height >= 1
    rec = check_record(
        instance, dg.AssetCheckKey(dg.AssetKey("intervention_results"), "noop_cells_equal_baseline")
    )
    assert rec.evaluation.passed and rec.evaluation.metadata["cells_checked"].value == 3
    assert (profile.path("figures") / "tradeoff_frontier.png").stat().st_size > 10_000
    text = (profile.path("reports") / "phase2_report.md").read_text()
    assert "## Intervention frontier" in text and "Pareto-optimal cells" in text and "token ban" in text
