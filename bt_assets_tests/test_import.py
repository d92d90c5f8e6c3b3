"""Importing an original Phase-1 run: the seed-compatible files equal the published ones value for
value, metrics_v2 follows the original schema, and the corrected metrics show both headlines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bt_assets.config import load_profile
from bt_assets.definitions import build_definitions
from bt_assets.launch import materialize_all
from bt_assets_tests.conftest import tmp_instance

pytestmark = pytest.mark.slow

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("import")
    prof = tmp / "import.yaml"
    prof.write_text(f"""extends: import_reference
dataset: {{source: jsonl, path: "{FIX / "gsm8k200_golds.jsonl"}", n: 200}}
phase1: {{import_dir: "{FIX / "phase1_run"}"}}
paths: {{storage: "{tmp / "storage"}", figures: "{tmp / "figures"}", reports: "{tmp / "reports"}"}}
""")
    profile = load_profile(str(prof))
    with tmp_instance(tmp) as instance:
        assert materialize_all(build_definitions(profile), instance)
    return profile


def csv_rows(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines()[1:] if line.strip()}


def test_original_files_reproduced(imported):
    out = imported.path("storage") / "original_format"
    ref = FIX / "phase1_run"
    assert json.loads((out / "summary_metrics.json").read_text()) == json.loads(
        (ref / "summary_metrics.json").read_text()
    )
    for name in ("condition_comparison.csv", "formatting_summary.csv"):
        assert csv_rows(out / name) == csv_rows(ref / name), name
        assert (out / name).read_text().splitlines()[0] == (ref / name).read_text().splitlines()[0].strip()


def test_metrics_v2_schema(imported):
    v2 = json.loads((imported.path("storage") / "original_format" / "metrics_v2.json").read_text())
    assert list(v2) == [
        "baseline_only_summary",
        "backtracking_vs_accuracy",
        "formatting_effect",
        "variant_specific",
    ]
    bva = v2["backtracking_vs_accuracy"]
    assert bva["with_backtracking"]["count"] == 2452 and bva["with_backtracking"]["correct"] == 582
    assert round(bva["accuracy_lift_ratio"], 2) == 2.06


def test_corrected_metrics_show_both_headlines(imported):
    corrected = json.loads((imported.path("storage") / "metrics_corrected.json").read_text())
    head = corrected["headline"]
    assert round(head["original_lift"], 2) == 2.06
    assert head["corrected_lift"] < 1.2  # regrading the stored predictions removes the 2x lift
