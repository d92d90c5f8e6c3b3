"""The sections of a profile (everything but ``model``, whose one definition is
``bt_assets.lib.modeling.ModelSpec``): pydantic models with ``extra="forbid"``, so an unknown key or a
bad value fails at load naming its dotted key. ``bt_assets.config.Profile`` assembles them."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from bt_assets.intervention_sections import ComponentMeansCfg, HeadScanCfg, InterventionCfg, SteeringCfg
from bt_assets.lib.hooks import COMPONENTS
from bt_assets.lib.stats import Evidence
from bt_assets.section_types import (  # noqa: F401 (re-exported: the sections' shared types)
    Component,
    Fraction01,
    NonEmptyStr,
    NonNegFloat,
    NonNegInt,
    PosInt,
    Strict,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


class RunCfg(Strict):
    seed: int = 42


class PathsCfg(Strict):
    storage: str = "storage"
    figures: str = "figures"
    reports: str = "reports"


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
            problem = file_problem(self.path)
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
    batch_size: PosInt | None = Field(
        64, description="rows per batch (static) or live rows (continuous); null = planned from free memory"
    )
    chunk_problems: PosInt = Field(8, description="problems per resumable chunk")
    scheduler: Literal["static", "continuous"] | None = Field(
        None, description="static | continuous; default by device (CPU static: bit-exact; GPU continuous)"
    )
    min_decode_rows: PosInt | None = Field(
        None, description="engine row floor; default by device (CPU 16: the bit-exact path; GPU 1)"
    )
    eos_check_every: PosInt | None = Field(
        None, description="decode steps between finished-row checks; default by device (CPU 1, GPU 8)"
    )


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

    @field_validator("import_dir")
    @classmethod
    def _dir_exists(cls, v: str | None) -> str | None:
        if v is not None and file_problem(str(Path(v) / "backtracking_events.csv")):
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
    components: list[Component] = Field(list(COMPONENTS), min_length=1)
    layers: Literal["all"] | Annotated[list[NonNegInt], Field(min_length=1)] = "all"
    topk: PosInt = 6
    statistic: Literal["delta_logit", "delta_logprob"] = "delta_logit"
    require_negative: bool = False
    scan_scale: Fraction01 = 0.0
    truncation_warn_share: Fraction01 = Field(
        0.5, description="reports warn when more of a condition's/cell's completions hit the token cap"
    )
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
    components: list[tuple[Component, NonNegInt]] = []
    from_selected: Literal[(*COMPONENTS, "all")] | None = None
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
    min_onset_stability: Fraction01 | None = Field(
        None,
        description="keep only events whose clean onset resamples backtrack again at least this often "
        "(needs phase2.onset_resamples); None keeps every sampled event",
    )


class OnsetResamplesCfg(Strict):
    """``onset_resamples``: continuations resampled from the prefix before a BT onset, clean and with
    ``subset`` scaled by ``scale`` for the first ``first_k_steps`` decode steps only."""

    subset: str
    scale: NonNegFloat = 0.0
    max_events: PosInt = 40
    samples: PosInt = Field(8, description="continuations per event and condition")
    first_k_steps: PosInt = Field(1, description="decode steps the subset is scaled for (1: the onset step)")
    window_tokens: PosInt = Field(16, description="a continuation backtracks if it does within these tokens")
    max_new_tokens: PosInt = Field(64, description="tokens per continuation; finished ones are graded")

    @model_validator(mode="after")
    def _within_budget(self) -> OnsetResamplesCfg:
        for key in ("window_tokens", "first_k_steps"):
            value = getattr(self, key)
            if value > self.max_new_tokens:
                raise ValueError(f"{key} ({value}) exceeds max_new_tokens ({self.max_new_tokens})")
        return self


class Phase2Cfg(Strict):
    n_problems: PosInt = 120
    samples_per_prompt: PosInt = 4
    variant: str | None = None
    use_system_prompt: bool = True
    subsets: list[Subset] = []
    scale_sweep: ScaleSweepCfg | None = None
    continuation: ContinuationCfg | None = None
    onset_resamples: OnsetResamplesCfg | None = None
    best_tradeoff_min_accuracy: Fraction01 = 0.5
    schedule_cron: str | None = None
    schedule_enabled: bool = False
    allow_scale_above_one: bool = Field(
        False, description="let scale_sweep/continuation scales exceed 1 (amplify instead of ablate)"
    )
    interventions: list[InterventionCfg] = []
    steering: SteeringCfg = SteeringCfg()
    head_scan: HeadScanCfg = HeadScanCfg()
    component_means: ComponentMeansCfg = ComponentMeansCfg()

    @model_validator(mode="after")
    def _intervention_refs(self) -> Phase2Cfg:
        problems, names = [], [iv.name for iv in self.interventions]
        if len(set(names)) != len(names):
            problems.append(f"phase2.interventions: duplicate names {names}")
        for i, iv in enumerate(self.interventions):  # unknown subsets: Profile's cross-references
            if iv.kind == "scale" and not self.allow_scale_above_one:
                problems += [
                    f"phase2.interventions.{i}.strengths.{j}: {x} is above 1 "
                    "(set phase2.allow_scale_above_one to amplify)"
                    for j, x in enumerate(iv.strengths)
                    if x > 1.0
                ]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @field_validator("schedule_cron")
    @classmethod
    def _valid_cron(cls, v: str | None) -> str | None:
        if v is not None:
            import dagster as dg  # only when a cron is configured

            try:  # dagster's public check, the one its schedules and automation conditions apply
                ok = len(v.split()) == 5 and bool(
                    dg.ScheduleDefinition(name="cron", cron_schedule=v, job_name="cron")
                )
            except Exception:  # DagsterInvalidDefinitionError, or assorted types on garbage
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


def resolve_path(p: str | os.PathLike[str]) -> Path:
    """Relative paths are relative to the repository root, not the working directory."""
    path = Path(p).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def file_problem(p: str) -> str | None:
    """Why ``p`` (resolved like ``resolve_path``) is not a readable regular file, or None if it is."""
    try:
        path = resolve_path(p)
        if path.is_file():
            return None if os.access(path, os.R_OK) else f"file not readable: {p}"
    except (OSError, RuntimeError, ValueError) as e:  # name too long, "~nouser", NUL byte, ...
        return f"cannot access {short(p)}: {short(str(e))}"
    return f"file not found: {short(p)}"


def short(text: str, limit: int = 120) -> str:
    """``text`` cut for an error message (a 5000-character path must not drown the key it belongs to)."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"
