"""The GPU resource: one hooked causal LM per run, loaded lazily on first use."""

from __future__ import annotations

import gc
from typing import Any

import dagster as dg
import torch
from pydantic import PrivateAttr

from bt_assets.config import load_profile
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

    _spec: ModelSpec | None = PrivateAttr(default=None)
    _model: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)

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
