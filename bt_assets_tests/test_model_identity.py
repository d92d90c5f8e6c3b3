"""One identity for the model: a launch whose model resource config (launchpad) names another model than
the code location's profile is refused before any step, because chunk fingerprints and provenance are
the profile's; the location's own config runs."""

from __future__ import annotations

import dagster as dg
import pytest

from bt_assets.config import ConfigError
from bt_assets.definitions import build_definitions
from bt_assets.resources import bound_model
from bt_assets_tests.conftest import tiny_profile, tmp_instance, write_profile

pytestmark = pytest.mark.slow  # Dagster runs


def test_resource_bound_to_the_profile_refuses_another_model(tmp_path, tiny_dirs):
    profile = tiny_profile(tmp_path, tiny_dirs["qwen2"])
    bound_model(profile).check_identity()  # its own profile: fine
    other = tmp_path / "bf16.yaml"
    other.write_text(f"extends: {profile.source}\nmodel: {{dtype: bfloat16}}\n")
    with pytest.raises(ConfigError, match=r"model\.dtype: 'bfloat16' \(location: 'float32'\)"):
        type(bound_model(profile))(profile=str(other)).check_identity()


def test_launch_with_another_model_config_fails_before_any_step(tmp_path, tiny_dirs):
    (tmp_path / "other").mkdir()
    profile = tiny_profile(tmp_path, tiny_dirs["qwen2"])
    other = write_profile(tmp_path / "other", tiny_dirs["llama"])
    defs = build_definitions(profile)
    job = defs.resolve_implicit_global_asset_job_def()
    with tmp_instance(tmp_path) as instance:
        result = job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey("problems"), dg.AssetKey("prompts")],
            run_config={"resources": {"model": {"config": {"profile": str(other)}}}},
            raise_on_error=False,
        )
        assert not result.success
        text = " ".join(str(e.message) for e in result.all_events if e.is_failure) + " ".join(
            str(e.event_specific_data) for e in result.all_events if e.is_failure
        )
        assert "loads another model" in text and "model.id" in text
        assert instance.get_latest_materialization_event(dg.AssetKey("prompts")) is None
