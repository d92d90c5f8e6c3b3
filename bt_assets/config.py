"""Profiles: one validated YAML file per way of running the experiment.

A profile is chosen by ``BT_PROFILE`` (a name under ``configs/`` or a path to a YAML file; default
``demo``). ``extends: <name or path>`` deep-merges the profile over its parent. Every key is checked
by a pydantic schema with ``extra="forbid"``: an unknown key, a wrong type or a bad value fails at
load with the dotted key path in the message (the original silently ignored nine keys).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
COMPONENTS = ("attn", "mlp")

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction01 = Annotated[float, Field(ge=0.0, le=1.0)]


class ConfigError(ValueError):
    """A profile failed validation; the message names the offending key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunCfg(Strict):
    name: str = "bt"
    seed: int = 42


class PathsCfg(Strict):
    storage: str = "storage"
    figures: str = "figures"
    reports: str = "reports"


class ModelCfg(Strict):
    id: str = Field(description="HF hub id, local directory, or 'package:<python package>' for a wheel")
    gguf_file: str | None = None
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    device: str = "auto"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    revision: str | None = None
    add_bos: bool = Field(True, description="prepend BOS when the tokenizer has one")


class DatasetCfg(Strict):
    source: Literal["synthetic", "jsonl", "hf"] = "synthetic"
    n: PosInt = 200
    seed: int = 123
    shuffle: bool = True
    path: str | None = None
    hf_id: str = "gsm8k"
    hf_config: str | None = "main"
    split: str = "test"

    @model_validator(mode="after")
    def _source_needs(self) -> DatasetCfg:
        if self.source == "jsonl":
            if not self.path:
                raise ValueError("dataset.path is required when dataset.source is 'jsonl'")
            if not resolve_path(self.path).is_file():
                raise ValueError(f"dataset.path: file not found: {self.path}")
        return self


class VariantCfg(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_]+$")
    think_open: str = ""
    think_close: str = ""
    drop_lines: list[str] = []


class PromptingCfg(Strict):
    mode: Literal["seed_compatible", "corrected"] = "corrected"
    system_prompt: str | None = "You are a helpful assistant."
    template: str
    chat_template: bool = False
    variants: list[VariantCfg] = Field(min_length=1)

    @field_validator("template")
    @classmethod
    def _has_question(cls, v: str) -> str:
        if "{question}" not in v:
            raise ValueError("template must contain '{question}'")
        return v

    @field_validator("variants")
    @classmethod
    def _unique(cls, v: list[VariantCfg]) -> list[VariantCfg]:
        names = [x.name for x in v]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate variant names: {names}")
        return v


class GenerationCfg(Strict):
    samples_per_prompt: PosInt = 6
    max_new_tokens: PosInt = 512
    temperature: Annotated[float, Field(ge=0.0)] = 0.7
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    top_k: NonNegInt = 64
    batch_size: PosInt = 64
    chunk_problems: PosInt = Field(8, description="problems per resumable chunk")


class DetectionCfg(Strict):
    mode: Literal["seed_compatible", "corrected"] = "corrected"
    triggers_strict: list[str] = Field(["Wait", "Actually", "Hold on"], min_length=1)
    triggers_relaxed: list[str] = [
        "Wait",
        "Actually",
        "Hold on",
        "Let me check",
        "Let's check",
        "I was wrong",
        "mistake",
    ]
    answer_regex: str | None = None


class GradingCfg(Strict):
    mode: Literal["seed_compatible", "corrected"] = "corrected"


class AblationCfg(Strict):
    mode: Literal["scale", "zero"] = "scale"
    scale: Fraction01 = 0.0
    random_seeds: list[int] = Field([999], min_length=1)


class Phase1Cfg(Strict):
    import_dir: str | None = None
    conditions: list[Literal["baseline", "targeted_ablation", "random_ablation"]] = [
        "baseline",
        "targeted_ablation",
        "random_ablation",
    ]
    ablation_variant: str | None = Field(None, description="variant for ablation cells; default first")
    truncation_warn_share: Fraction01 = 0.5

    @field_validator("import_dir")
    @classmethod
    def _dir_exists(cls, v: str | None) -> str | None:
        if v is not None and not (resolve_path(v) / "backtracking_events.csv").is_file():
            raise ValueError(f"no backtracking_events.csv in {v}")
        return v

    @field_validator("conditions")
    @classmethod
    def _baseline_first(cls, v: list[str]) -> list[str]:
        if not v or v[0] != "baseline" or len(set(v)) != len(v):
            raise ValueError("conditions must start with 'baseline' and have no duplicates")
        return v


class AnalysisCfg(Strict):
    variant: str | None = Field(None, description="variant analysed by the teacher-forced stages")
    max_events: PosInt = 120
    event_seed: int = 42
    components: list[Literal["attn", "mlp"]] = ["attn", "mlp"]
    layers: Literal["all"] | list[NonNegInt] = "all"
    topk: PosInt = 6
    statistic: Literal["delta_logit", "delta_logprob"] = "delta_logit"
    require_negative: bool = False
    scan_scale: Fraction01 = 0.0


class Subset(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_]+$")
    components: list[tuple[Literal["attn", "mlp"], NonNegInt]] = []
    from_selected: Literal["attn", "mlp", "all"] | None = None
    top: PosInt | None = None

    @model_validator(mode="after")
    def _non_empty(self) -> Subset:
        if not self.components and self.from_selected is None:
            raise ValueError(f"subset {self.name!r} is empty: give components or from_selected")
        return self


class ScaleSweepCfg(Strict):
    subset: str
    scales: list[Fraction01] = Field([0.0, 0.25, 0.5, 0.75, 0.9, 1.0], min_length=1)


class ContinuationCfg(Strict):
    subset: str
    scales: list[Fraction01] = Field([0.0, 0.5, 0.9], min_length=1)
    max_events: PosInt = 150
    top_tokens: PosInt = 5
    synonyms: list[str] = ["Actually", "Hold on", "Hmm", "But", "Let me", "However", "No"]


class Phase2Cfg(Strict):
    n_problems: PosInt = 120
    samples_per_prompt: PosInt = 4
    variant: str | None = None
    use_system_prompt: bool = True
    subsets: list[Subset] = []
    scale_sweep: ScaleSweepCfg | None = None
    continuation: ContinuationCfg | None = None
    best_tradeoff_min_accuracy: Fraction01 = 0.5
    schedule_cron: str | None = None
    schedule_enabled: bool = False


class Profile(Strict):
    """A whole profile (configs/<name>.yaml after ``extends`` is resolved)."""

    profile_name: str = "custom"
    extends: str | None = None
    run: RunCfg = RunCfg()
    paths: PathsCfg = PathsCfg()
    model: ModelCfg
    dataset: DatasetCfg = DatasetCfg()
    prompting: PromptingCfg
    generation: GenerationCfg = GenerationCfg()
    detection: DetectionCfg = DetectionCfg()
    grading: GradingCfg = GradingCfg()
    ablation: AblationCfg = AblationCfg()
    phase1: Phase1Cfg = Phase1Cfg()
    analysis: AnalysisCfg = AnalysisCfg()
    phase2: Phase2Cfg = Phase2Cfg()

    @model_validator(mode="after")
    def _cross_refs(self) -> Profile:
        names = [v.name for v in self.prompting.variants]
        for key, val in (
            ("phase1.ablation_variant", self.phase1.ablation_variant),
            ("analysis.variant", self.analysis.variant),
            ("phase2.variant", self.phase2.variant),
        ):
            if val is not None and val not in names:
                raise ValueError(f"{key}: unknown variant {val!r} (variants: {names})")
        subsets = [s.name for s in self.phase2.subsets]
        if len(set(subsets)) != len(subsets):
            raise ValueError(f"phase2.subsets: duplicate names {subsets}")
        for key, ref in (
            ("phase2.scale_sweep.subset", self.phase2.scale_sweep),
            ("phase2.continuation.subset", self.phase2.continuation),
        ):
            if ref is not None and ref.subset not in subsets:
                raise ValueError(f"{key}: unknown subset {ref.subset!r} (subsets: {subsets})")
        return self

    # -- derived values -------------------------------------------------------------------------
    @property
    def variant_names(self) -> list[str]:
        return [v.name for v in self.prompting.variants]

    @property
    def ablation_variant(self) -> str:
        return self.phase1.ablation_variant or self.variant_names[0]

    @property
    def analysis_variant(self) -> str:
        return self.analysis.variant or self.ablation_variant

    @property
    def phase2_variant(self) -> str:
        return self.phase2.variant or self.ablation_variant

    def path(self, kind: Literal["storage", "figures", "reports"]) -> Path:
        return resolve_path(getattr(self.paths, kind))

    def config_hash(self) -> str:
        """sha256 of the resolved profile (canonical JSON), first 12 hex chars."""
        blob = json.dumps(self.model_dump(mode="json", exclude={"profile_name"}), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def resolve_path(p: str | os.PathLike[str]) -> Path:
    """Relative paths are relative to the repository root, not the working directory."""
    path = Path(p).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def _profile_file(name_or_path: str, base: Path | None = None) -> Path:
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        path = Path(name_or_path).expanduser()
        if not path.is_absolute():
            candidates = [(base or Path.cwd()) / path, REPO_ROOT / path]
            path = next((c for c in candidates if c.is_file()), candidates[0])
    else:
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"profile {name_or_path!r} not found (looked for {path})")
    return path


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; any other value (lists included) replaces the parent's."""
    out = dict(base)
    for key, val in over.items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], val)
        else:
            out[key] = val
    return out


def _read_raw(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in seen:
        raise ConfigError(f"extends: cycle through {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a profile must be a mapping")
    parent = raw.get("extends")
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: must be a profile name or path")
    merged = deep_merge(_read_raw(_profile_file(parent, path.parent), (*seen, path)), raw)
    merged["extends"] = parent
    return merged


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"invalid profile {source}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def load_profile(name_or_path: str | None = None) -> Profile:
    """Load and validate a profile; default from ``BT_PROFILE``, else ``demo``."""
    name_or_path = name_or_path or os.environ.get("BT_PROFILE") or "demo"
    path = _profile_file(name_or_path)
    raw = _read_raw(path)
    raw.setdefault("profile_name", path.stem)
    try:
        return Profile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, str(path))) from None
