"""The GPU resource: one hooked causal LM per run, loaded lazily on first use."""

from __future__ import annotations

import gc
from typing import Any

import dagster as dg
import torch
from pydantic import PrivateAttr

from bt_assets.lib.modeling import ModelSpec, eos_ids, load_model, load_tokenizer


class HookedModel(dg.ConfigurableResource):
    """A causal LM whose attention/MLP outputs the assets scale through ``bt_assets.lib.hooks``.

    Nothing loads at resource setup (an in-process run sets up every resource, even for CPU-only
    steps): the tokenizer and the model load on first access and are reused for the whole run.
    """

    model_id: str
    gguf_file: str | None = None
    dtype: str = "float32"
    device: str = "auto"
    attn_implementation: str = "sdpa"
    revision: str | None = None

    _model: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(
            self.model_id, self.gguf_file, self.dtype, self.device, self.attn_implementation, self.revision
        )

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.spec)
        return self._tokenizer

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            dg.get_dagster_logger().info(f"loading model {self.model_id} ({self.dtype}, {self.device})")
            self._model = load_model(self.spec)
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
