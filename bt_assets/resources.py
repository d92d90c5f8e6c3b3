"""The GPU resource: one hooked causal LM per run, loaded lazily on first use."""

from __future__ import annotations

import gc
from collections.abc import Mapping
from typing import Any, ClassVar

import dagster as dg
import torch
from pydantic import PrivateAttr

from bt_assets.config import ConfigError, Profile, load_profile
from bt_assets.lib.modeling import ModelSpec, eos_ids, load_model, load_tokenizer


class HookedModel(dg.ConfigurableResource):
    """The causal LM of a profile, whose attention/MLP outputs the assets scale through
    ``bt_assets.lib.hooks``.

    Its one setting is the profile (a name under ``configs/`` or a YAML path): the model it loads is
    that profile's ``model`` section (``ModelSpec``), the same spec that fingerprints every generation
    chunk, so the resource cannot load weights or a dtype other than the ones the outputs are recorded
    under. Nothing loads at resource setup (an in-process run sets up every resource, even for CPU-only
    steps): the tokenizer and the model load on first access and are reused for the whole run.
    """

    profile: str
    # The model identity the code location records its outputs under (``bound_model``): a class
    # attribute, not config, so a launchpad edit of ``profile`` cannot change it.
    expected_identity: ClassVar[Mapping[str, object] | None] = None

    _spec: ModelSpec | None = PrivateAttr(default=None)
    _model: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Refuse the run before any step when the configured profile names another model than the
        location's: chunk fingerprints and provenance come from the location's profile, so a model
        with another identity would write completions under a fingerprint that does not describe them."""
        self.check_identity()

    def check_identity(self) -> None:
        if self.expected_identity is None:
            return
        got, want = self.spec.identity(), dict(self.expected_identity)
        diff = {
            k: (got.get(k), want.get(k)) for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)
        }
        if diff:
            shown = ", ".join(f"model.{k}: {g!r} (location: {w!r})" for k, (g, w) in diff.items())
            raise ConfigError(
                f"resources.model.config.profile {self.profile!r} loads another model than this code "
                f"location's profile records its outputs under ({shown}). Chunk fingerprints and "
                "provenance come from the location's profile: launch without overriding the model "
                "resource, or select another profile with BT_PROFILE and reload the location."
            )

    @property
    def spec(self) -> ModelSpec:
        if self._spec is None:
            self._spec = load_profile(self.profile).model
        return self._spec

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.spec)
        return self._tokenizer

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            s = self.spec
            dg.get_dagster_logger().info(f"loading model {s.id} ({s.dtype}, {s.device})")
            self._model = load_model(s)
        return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def eos_ids(self) -> list[int]:
        return eos_ids(self.model, self.tokenizer)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def bound_model(profile: Profile) -> HookedModel:
    """The model resource of a code location: ``HookedModel`` on ``profile``, refusing at run start any
    launch whose resource config loads a model of another identity (``ModelSpec.identity``)."""
    bound = type(
        "HookedModel",
        (HookedModel,),
        {
            "expected_identity": profile.model.identity(),
            "__module__": __name__,
            "__doc__": HookedModel.__doc__,
        },
    )
    return bound(profile=profile.source)
