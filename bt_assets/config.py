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
from typing import Any, Literal

import yaml
from pydantic import PrivateAttr, ValidationError, model_validator

from bt_assets.lib.conditions import expand_conditions
from bt_assets.lib.modeling import ModelSpec
from bt_assets.profile_sections import (
    REPO_ROOT,
    AblationCfg,
    AnalysisCfg,
    DatasetCfg,
    DetectionCfg,
    GenerationCfg,
    GradingCfg,
    K8sCfg,
    PathsCfg,
    Phase1Cfg,
    Phase2Cfg,
    PromptingCfg,
    RunCfg,
    Strict,
    resolve_path,
    short,
)

__all__ = ["REPO_ROOT", "ConfigError", "Profile", "load_profile", "resolve_path"]

CONFIG_DIR = REPO_ROOT / "configs"
K8S_CONFIG_TAG = "dagster-k8s/config"  # dagster_k8s.job.USER_DEFINED_K8S_CONFIG_KEY


class ConfigError(ValueError):
    """A profile failed validation; the message names the offending key."""


class Profile(Strict):
    """A whole profile (configs/<name>.yaml after ``extends`` is resolved)."""

    profile_name: str = "custom"
    extends: str | None = None
    run: RunCfg = RunCfg()
    paths: PathsCfg = PathsCfg()
    model: ModelSpec
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
    _source: str | None = PrivateAttr(None)  # the YAML file it was loaded from (``load_profile``)

    @property
    def source(self) -> str:
        """The profile file this profile was loaded from (its name when built in code)."""
        return self._source or self.profile_name

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
        problems += [
            f"phase2.interventions.{i}.subset: unknown subset {iv.subset!r} (subsets: {subsets})"
            for i, iv in enumerate(p2.interventions)
            if iv.kind in ("scale", "mean") and iv.subset not in subsets
        ]
        res = p2.onset_resamples
        if res is not None and res.subset not in subsets:
            problems.append(
                f"phase2.onset_resamples.subset: unknown subset {res.subset!r} (subsets: {subsets})"
            )
        if res is not None and res.scale > 1.0 and not p2.allow_scale_above_one:
            problems.append(
                "phase2.onset_resamples.scale: above 1 (set phase2.allow_scale_above_one to amplify)"
            )
        if p2.continuation and p2.continuation.min_onset_stability is not None and res is None:
            problems.append("phase2.continuation.min_onset_stability: needs phase2.onset_resamples")
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
    def phase1_conditions(self) -> list[str]:
        """The Phase-1 conditions as generated: ``random_ablation`` is one condition per seed of
        ``ablation.random_seeds`` (``random_ablation_s<seed>``); an import keeps the original's names."""
        if self.phase1.import_dir is not None:
            return list(self.phase1.conditions)
        return expand_conditions(self.phase1.conditions, self.ablation.random_seeds)

    @property
    def ablation_variant(self) -> str:
        return self.phase1.ablation_variant or self.variant_names[0]

    @property
    def analysis_variant(self) -> str:
        return self.analysis.variant or self.ablation_variant

    @property
    def ablation_scale(self) -> float:
        """The factor ablation cells and the subset sweep scale components by (0 in ``zero`` mode)."""
        return 0.0 if self.ablation.mode == "zero" else self.ablation.scale

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
        raise ConfigError(f"profile {short(repr(name_or_path))}: cannot access it: {short(str(e))}") from None
    if not found:
        raise ConfigError(f"profile {short(repr(name_or_path))} not found (looked for {short(str(path))})")
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


KINDS = ("scale", "mean", "heads", "steer", "token_ban")  # phase2.interventions' discriminator


def _format_errors(exc: ValidationError, source: str) -> str:
    """One line per problem, ``  dotted.key: message``; a cross-field check names its keys itself."""
    lines = [f"invalid profile {source}:"]
    for err in exc.errors():
        extra = err["type"] in ("extra_forbidden", "unexpected_keyword_argument")  # models, dataclasses
        # union members add tags such as "list[constrained-int]" to the location: not keys, dropped
        loc = list(err["loc"])
        for i in range(2, len(loc)):  # a discriminated union adds the item's kind after its index
            if loc[i - 2] == "interventions" and isinstance(loc[i - 1], int) and loc[i] in KINDS:
                del loc[i]
                break
        key = ".".join(str(p) for p in loc if extra or "[" not in str(p))
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
        profile = Profile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, str(path))) from None
    profile._source = str(path)
    return profile
