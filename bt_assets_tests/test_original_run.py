"""The original run as a second code location: every asset its events support is built (tables, the
figures of events, a report) with lineage back to the imported events, under the key prefix
``original_run/``; the report's headline is the one the tables compute."""

from __future__ import annotations

import json
import re

import dagster as dg
import pytest

from bt_assets.config import load_profile
from bt_assets.definitions import build_definitions
from bt_assets.launch import materialize_all
from bt_assets_tests.conftest import tmp_instance

pytestmark = pytest.mark.slow

EVENTS = dg.AssetKey(["original_run", "phase1_events"])
FIGURES = [
    "bt_rate_by_variant",
    "accuracy_by_bt",
    "bt_rate_by_condition",
    "formatting_effect",
    "phase2_baseline_summary",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("original_run")
    prof = tmp / "original_run.yaml"
    prof.write_text(f"""extends: original_run
paths: {{storage: "{tmp / "storage"}", figures: "{tmp / "figures"}", reports: "{tmp / "reports"}"}}
""")
    profile = load_profile(str(prof))
    defs = build_definitions(profile, key_prefix="original_run")
    with tmp_instance(tmp) as instance:
        assert materialize_all(defs, instance)
        yield profile, defs, instance


def test_only_event_stages_exist_each_with_lineage_to_the_imported_events(built):
    _, defs, instance = built
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        f"original_run/{n}"
        for n in [
            "problems",
            "phase1_events",
            "seed_compatible_tables",
            "metrics_corrected",
            "original_run_report",
            *(f"fig_{f}" for f in FIGURES),
        ]
    }
    for name in FIGURES:
        key = dg.AssetKey(["original_run", f"fig_{name}"])
        upstream = dg.AssetSelection.assets(key).upstream().resolve(graph)
        assert EVENTS in upstream, name
        assert instance.get_latest_materialization_event(key) is not None, name
    report = dg.AssetKey(["original_run", "original_run_report"])
    assert {dg.AssetKey(["original_run", f"fig_{f}"]) for f in FIGURES} <= graph.get(report).parent_keys


def test_report_states_both_headlines_with_counts_and_interval(built):
    profile, *_ = built
    text = (profile.path("reports") / "original_run_report.md").read_text()
    corrected = json.loads((profile.path("storage") / "metrics_corrected.json").read_text())
    head = corrected["headline"]
    lo, hi = head["corrected_lift_ci95"]
    assert "2.06x backtracking lift" in text and "(582 of 2452)" in text and "(132 of 1148)" in text
    assert f"give {head['corrected_lift']:.2f}x (95% bootstrap over problems {lo:.2f}-{hi:.2f})" in text
    assert lo < 1 < hi and "the interval includes 1" in text  # no direction is claimed
    with_bt = corrected["overall"]["accuracy_with_backtracking"]
    assert f"({with_bt['count']} of {with_bt['n']})" in text
    assert re.search(r"\d+ of 3600 baseline rows \(\d+\.\d%\) record 512 completion tokens", text)
    assert "logit lens, ablation scan" in text  # the absent stages, and why
    for name in FIGURES:
        png = profile.path("figures") / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"{png.name})" in text


def test_storage_is_per_location_and_unprefixed(built):
    profile, *_ = built
    storage = profile.path("storage")
    assert (storage / "phase1_events.parquet").is_file()
    assert not (storage / "original_run").exists()
    assert (
        json.loads((storage / "original_format" / "metrics_v2.json").read_text())["backtracking_vs_accuracy"][
            "with_backtracking"
        ]["count"]
        == 2452
    )
