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
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bt_assets.lib.stats import Evidence

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
COMPONENTS = ("attn", "mlp")
K8S_CONFIG_TAG = "dagster-k8s/config"  # dagster_k8s.job.USER_DEFINED_K8S_CONFIG_KEY

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction01 = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegFloat = Annotated[float, Field(ge=0.0)]
NonEmptyStr = Annotated[str, Field(min_length=1)]


class ConfigError(ValueError):
    """A profile failed validation; the message names the offending key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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
    num_layers: PosInt | None = Field(
        None,
        description="decoder layers of the model; when given, every configured layer is range-checked at "
        "load (otherwise when the model first loads)",
    )


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
            problem = _file_problem(self.path)
            if problem:
                raise ValueError(f"dataset.path: {problem}")
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

    @model_validator(mode="after")
    def _drop_lines_exist(self) -> PromptingCfg:
        lines = {line.strip() for line in self.template.splitlines()}
        for i, v in enumerate(self.variants):
            for j, d in enumerate(v.drop_lines):
                if d.strip() not in lines:
                    raise ValueError(
                        f"prompting.variants.{i}.drop_lines.{j}: {d!r} is not a line of prompting.template"
                    )
        return self


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
    triggers_strict: list[NonEmptyStr] = Field(["Wait", "Actually", "Hold on"], min_length=1)
    triggers_relaxed: list[NonEmptyStr] = [
        "Wait",
        "Actually",
        "Hold on",
        "Let me check",
        "Let's check",
        "I was wrong",
        "mistake",
    ]
    answer_regex: str | None = None

    @field_validator("answer_regex")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except (re.error, RecursionError, OverflowError) as e:
                raise ValueError(f"not a valid regular expression: {e}") from None
        return v


class GradingCfg(Strict):
    mode: Literal["seed_compatible", "corrected"] = "corrected"


class AblationCfg(Strict):
    mode: Literal["scale", "zero"] = "scale"
    scale: Fraction01 = 0.0
    random_seeds: list[int] = Field([999], min_length=1)

    @field_validator("random_seeds")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate seeds {v}: each seed names one random layer set")
        return v


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
        if v is not None and _file_problem(str(Path(v) / "backtracking_events.csv")):
            raise ValueError(f"no backtracking_events.csv in {v}")
        return v

    @field_validator("conditions")
    @classmethod
    def _baseline_first(cls, v: list[str]) -> list[str]:
        if not v or v[0] != "baseline" or len(set(v)) != len(v):
            raise ValueError("conditions must start with 'baseline' and have no duplicates")
        return v


class AnalysisCfg(Strict):
    variant: str | None = Field(
        None,
        description="variant whose baseline BT events the teacher-forced stages analyse (default: the "
        "ablation variant, as the original); 'all' pools the events of every variant, each probed "
        "with its own prompt",
    )
    max_events: PosInt = 120
    event_seed: int = 42
    components: list[Literal["attn", "mlp"]] = Field(["attn", "mlp"], min_length=1)
    layers: Literal["all"] | Annotated[list[NonNegInt], Field(min_length=1)] = "all"
    topk: PosInt = 6
    statistic: Literal["delta_logit", "delta_logprob"] = "delta_logit"
    require_negative: bool = False
    scan_scale: Fraction01 = 0.0
    min_events_for_claims: PosInt = Field(
        5, description="reports claim an interval excludes a value only with this many BT events or more"
    )
    min_problems_for_claims: PosInt = Field(
        2, description="... and only when those events come from at least this many problems"
    )

    @property
    def evidence(self) -> Evidence:
        return Evidence(self.min_events_for_claims, self.min_problems_for_claims)

    @field_validator("components", "layers")
    @classmethod
    def _no_duplicates(cls, v: Any) -> Any:
        if isinstance(v, list) and len(set(v)) != len(v):
            raise ValueError(f"duplicate entries {v}")
        return v


class Subset(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_]+$", description="'baseline' is reserved for the unhooked cell")
    components: list[tuple[Literal["attn", "mlp"], NonNegInt]] = []
    from_selected: Literal["attn", "mlp", "all"] | None = None
    top: PosInt | None = None

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v == "baseline":
            raise ValueError("'baseline' is reserved for the unhooked sweep cell; choose another name")
        return v

    @model_validator(mode="after")
    def _non_empty(self) -> Subset:
        if not self.components and self.from_selected is None:
            raise ValueError(f"subset {self.name!r} is empty: give components or from_selected")
        return self


class ScaleSweepCfg(Strict):
    subset: str
    scales: list[NonNegFloat] = Field(
        [0.0, 0.25, 0.5, 0.75, 0.9, 1.0], min_length=1, description="in [0, 1] unless allow_scale_above_one"
    )


class ContinuationCfg(Strict):
    subset: str
    scales: list[NonNegFloat] = Field(
        [0.0, 0.5, 0.9], min_length=1, description="in [0, 1] unless allow_scale_above_one"
    )
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
    allow_scale_above_one: bool = Field(
        False, description="let scale_sweep/continuation scales exceed 1 (amplify instead of ablate)"
    )

    @field_validator("schedule_cron")
    @classmethod
    def _valid_cron(cls, v: str | None) -> str | None:
        if v is not None:
            from dagster._utils.schedules import is_valid_cron_string  # only when a cron is configured

            try:
                ok = is_valid_cron_string(v)
            except Exception:  # croniter raises assorted types on garbage
                ok = False
            if not ok:
                raise ValueError(f"{v!r} is not a 5-field cron expression (e.g. '0 2 * * *')")
        return v


class K8sPodCfg(Strict):
    """The value of the ``dagster-k8s/config`` tag (the keys of dagster-k8s's
    ``USER_DEFINED_K8S_JOB_CONFIG_SCHEMA``); snake_case Kubernetes fields below each key."""

    container_config: dict[str, Any] | None = None
    pod_template_spec_metadata: dict[str, Any] | None = None
    pod_spec_config: dict[str, Any] | None = None
    job_config: dict[str, Any] | None = None
    job_metadata: dict[str, Any] | None = None
    job_spec_config: dict[str, Any] | None = None
    merge_behavior: Literal["DEEP", "SHALLOW"] | None = None


class K8sCfg(Strict):
    """Kubernetes deployment (deploy/k8s/README.md). Not part of the config hash: where a run
    executes does not change its outputs."""

    gpu: K8sPodCfg | None = Field(
        None, description="dagster-k8s/config for GPU assets and runs, e.g. an nvidia.com/gpu limit"
    )


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
    k8s: K8sCfg = K8sCfg()

    @model_validator(mode="after")
    def _cross_refs(self) -> Profile:
        problems = []
        names = [v.name for v in self.prompting.variants]
        for key, val in (
            ("phase1.ablation_variant", self.phase1.ablation_variant),
            ("analysis.variant", None if self.analysis.variant == "all" else self.analysis.variant),
            ("phase2.variant", self.phase2.variant),
        ):
            if val is not None and val not in names:
                problems.append(f"{key}: unknown variant {val!r} (variants: {names})")
        p2 = self.phase2
        subsets = [s.name for s in p2.subsets]
        if len(set(subsets)) != len(subsets):
            problems.append(f"phase2.subsets: duplicate names {subsets}")
        for key, ref in (("phase2.scale_sweep", p2.scale_sweep), ("phase2.continuation", p2.continuation)):
            if ref is None:
                continue
            if ref.subset not in subsets:
                problems.append(f"{key}.subset: unknown subset {ref.subset!r} (subsets: {subsets})")
            for i, scale in enumerate(ref.scales):
                if scale > 1.0 and not p2.allow_scale_above_one:
                    problems.append(
                        f"{key}.scales.{i}: {scale} is above 1 (set phase2.allow_scale_above_one to amplify)"
                    )
            shown = [f"{x:g}" for x in ref.scales]  # the partition keys' spelling
            if len(set(shown)) != len(shown):
                problems.append(f"{key}.scales: duplicate scales {shown}")
        if p2.n_problems > self.dataset.n:
            problems.append(f"phase2.n_problems: {p2.n_problems} is more than dataset.n ({self.dataset.n})")
        if self.model.num_layers is not None:
            problems += self.layer_problems(self.model.num_layers)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def layer_problems(self, n_layers: int) -> list[str]:
        """Configured layers outside a ``n_layers``-layer model, each naming its dotted key."""
        out = []
        if self.model.num_layers is not None and self.model.num_layers != n_layers:
            out.append(f"model.num_layers: {self.model.num_layers}, but the model has {n_layers} layers")
        if isinstance(self.analysis.layers, list):
            out += [
                f"analysis.layers.{i}: layer {layer} out of range for a {n_layers}-layer model "
                f"(0..{n_layers - 1})"
                for i, layer in enumerate(self.analysis.layers)
                if layer >= n_layers
            ]
        for i, sub in enumerate(self.phase2.subsets):
            out += [
                f"phase2.subsets.{i}.components.{j}: {comp} layer {layer} out of range for a "
                f"{n_layers}-layer model (0..{n_layers - 1})"
                for j, (comp, layer) in enumerate(sub.components)
                if layer >= n_layers
            ]
        return out

    def check_layers(self, n_layers: int) -> None:
        """Raise ConfigError naming every configured layer the loaded ``n_layers``-layer model lacks."""
        problems = self.layer_problems(n_layers)
        if problems:
            raise ConfigError(
                f"invalid profile {self.profile_name} for this model:\n  " + "\n  ".join(problems)
            )

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
        """sha256 of the resolved profile (canonical JSON), first 12 hex chars. ``k8s`` (where runs
        execute) is left out, so deploying a profile on Kubernetes keeps its outputs current."""
        blob = json.dumps(self.model_dump(mode="json", exclude={"profile_name", "k8s"}), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def k8s_gpu_op_tags(self) -> dict[str, Any]:
        """``op_tags`` for GPU assets: ``{"dagster-k8s/config": ...}`` when ``k8s.gpu`` is set, else
        empty. Applies to step pods (``k8s_job_executor``)."""
        if self.k8s.gpu is None:
            return {}
        return {K8S_CONFIG_TAG: self.k8s.gpu.model_dump(mode="json", exclude_none=True)}

    def k8s_gpu_run_tags(self) -> dict[str, str]:
        """The same as run/job tags (string values): the K8sRunLauncher reads them for the run pod
        (one pod per run, in-process executor)."""
        return {k: json.dumps(v, sort_keys=True) for k, v in self.k8s_gpu_op_tags().items()}


def resolve_path(p: str | os.PathLike[str]) -> Path:
    """Relative paths are relative to the repository root, not the working directory."""
    path = Path(p).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def _file_problem(p: str) -> str | None:
    """Why ``p`` (resolved like ``resolve_path``) is not a readable regular file, or None if it is."""
    try:
        path = resolve_path(p)
        if path.is_file():
            return None if os.access(path, os.R_OK) else f"file not readable: {p}"
    except (OSError, RuntimeError, ValueError) as e:  # name too long, "~nouser", NUL byte, ...
        return f"cannot access {_short(p)}: {_short(str(e))}"
    return f"file not found: {_short(p)}"


def _short(text: str, limit: int = 120) -> str:
    """``text`` cut for an error message (a 5000-character path must not drown the key it belongs to)."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _profile_file(name_or_path: str, base: Path | None = None) -> Path:
    try:
        if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
            path = Path(name_or_path).expanduser()
            if not path.is_absolute():
                candidates = [(base or Path.cwd()) / path, REPO_ROOT / path]
                path = next((c for c in candidates if c.is_file()), candidates[0])
        else:
            path = CONFIG_DIR / f"{name_or_path}.yaml"
        found = path.is_file()
    except (OSError, RuntimeError, ValueError) as e:  # name too long, "~nouser", NUL byte, ...
        raise ConfigError(
            f"profile {_short(repr(name_or_path))}: cannot access it: {_short(str(e))}"
        ) from None
    if not found:
        raise ConfigError(f"profile {_short(repr(name_or_path))} not found (looked for {_short(str(path))})")
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
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the profile: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a profile must be a mapping")
    parent = raw.get("extends")
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: must be a profile name or path")
    try:
        parent_path = _profile_file(parent, path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: extends: {exc}") from None
    merged = deep_merge(_read_raw(parent_path, (*seen, path)), raw)
    merged["extends"] = parent
    return merged


def _format_errors(exc: ValidationError, source: str) -> str:
    """One line per problem, ``  dotted.key: message``; a cross-field check names its keys itself."""
    lines = [f"invalid profile {source}:"]
    for err in exc.errors():
        extra = err["type"] == "extra_forbidden"
        # union members add tags such as "list[constrained-int]" to the location: not keys, dropped
        key = ".".join(str(p) for p in err["loc"] if extra or "[" not in str(p))
        msg = "unknown key" if extra else err["msg"]
        msg = msg.removeprefix("Value error, ")
        for part in msg.split("\n"):
            named = re.match(r"[A-Za-z_][\w.]*: ", part)
            inner = named.group(0)[:-2] if named else ""
            if inner and (not key or inner == key or inner.startswith(key + ".")):
                line = f"  {part}"  # the message already starts with its (more precise) key
            else:
                line = f"  {key or '<root>'}: {part}"
            if line not in lines:
                lines.append(line)
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
