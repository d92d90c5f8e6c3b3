"""Per-asset code versions: each asset's version changes with the profile keys its own output depends on
(its slice) and its code, never with operational keys; the slice is the definition's metadata."""

from __future__ import annotations

import subprocess

import pytest

from bt_assets import versions
from bt_assets.config import Profile, deep_merge, load_profile
from bt_assets.definitions import build_definitions

GENERATION = {"phase1_generations", "ablation_generations", "sweep_generations"}


def profile_with(base: Profile, over: dict) -> Profile:
    return Profile.model_validate(deep_merge(base.model_dump(mode="json"), over))


def code_versions(profile: Profile) -> dict[str, str]:
    specs = build_definitions(profile).resolve_all_asset_specs()
    return {s.key.to_user_string(): s.code_version for s in specs}


@pytest.fixture(scope="module", params=["demo", "paper"])
def base(request) -> tuple[Profile, dict[str, str]]:
    profile = load_profile(request.param)
    return profile, code_versions(profile)


def changed(base: tuple[Profile, dict[str, str]], over: dict) -> set[str]:
    profile, before = base
    after = code_versions(profile_with(profile, over))
    assert after.keys() == before.keys()
    return {k for k in before if after[k] != before[k]}


def test_every_asset_has_a_version_and_its_slice(base):
    profile, before = base
    assert all(before.values()), [k for k, v in before.items() if not v]
    for spec in build_definitions(profile).resolve_all_asset_specs():
        assert versions.SLICE_KEY in spec.metadata, spec.key


@pytest.mark.parametrize(
    "over",
    [
        {"generation": {"batch_size": 3}},
        {"generation": {"chunk_problems": 5, "min_decode_rows": 4, "eos_check_every": 2}},
        {"paths": {"storage": "/elsewhere/storage", "reports": "/elsewhere/reports"}},
        {"model": {"device": "cuda"}},
        {"phase2": {"schedule_cron": "0 3 * * *", "schedule_enabled": True}},
    ],
)
def test_operational_keys_change_no_version(base, over):
    assert changed(base, over) == set()


def test_sampling_key_changes_the_generation_assets_not_the_data(base):
    diff = changed(base, {"generation": {"temperature": 0.3}})
    assert GENERATION & diff == GENERATION & set(base[1])
    assert not {"problems", "prompts"} & diff
    assert not {k for k in diff if k.startswith("fig_") or k.endswith("_report")}


def test_report_threshold_changes_only_reports_and_figures(base):
    profile, before = base
    groups = {
        s.key.to_user_string(): s.group_name for s in build_definitions(profile).resolve_all_asset_specs()
    }
    diff = changed(base, {"analysis": {"truncation_warn_share": 0.9}})
    listed = {k for k in diff if versions.slice_keys(k) is not None}  # unlisted: every key, by design
    assert listed and {groups[k] for k in listed} == {"reports"}


def test_unlisted_asset_gets_every_non_operational_key():
    profile = load_profile("demo")
    slice_ = versions.profile_slice(profile, "a_new_asset")["*"]
    assert slice_["generation"]["temperature"] == profile.generation.temperature
    assert "batch_size" not in slice_["generation"] and "paths" not in slice_


def test_code_hash_ignores_docstrings_and_comments():
    a = 'def f(x):\n    """Why."""\n    return x + 1  # note\n'
    b = "def f(x):\n    return x + 1\n"
    assert versions._code_tree(a) == versions._code_tree(b)
    assert versions._code_tree(b) != versions._code_tree(b.replace("+ 1", "+ 2"))
    assert versions.code_hash("bt_assets.assets.generation") != versions.code_hash("bt_assets.assets.data")


def test_code_closure_follows_imports():
    """An asset module's code includes what it imports, transitively (wiring -> lib.generation -> ...)."""
    closure = versions.code_modules("bt_assets.assets.generation")
    assert {"bt_assets.assets.wiring", "bt_assets.lib.generation", "bt_assets.lib.engine"} <= closure
    assert not closure & versions.NOT_CODE


def test_no_private_dagster_imports():
    found = subprocess.run(["grep", "-rn", r"dagster\._", "bt_assets"], capture_output=True, text=True)
    assert found.stdout == "", found.stdout
