"""Per-asset code versions: what makes an asset's stored output out of date.

Dagster marks an asset stale when its ``code_version`` changes, and its descendants when an upstream
data version changes. One hash of the whole profile would mark every asset stale for a batch-size
edit, so each asset's version hashes only

* its **profile slice**: the keys its own computation reads (``SLICES``; upstream keys reach it through
  lineage, not through its version), shown as the definition metadata ``bt/profile_slice``;
* its **code**: the asset module and every ``bt_assets`` module it imports, transitively (the science
  in ``bt_assets.lib``, ``wiring``), parsed with ``ast`` so comments, docstrings and formatting do not
  count. ``config``/``profile_sections`` are left out: the slice holds the values they validate.

Operational keys (``OPERATIONAL``: where outputs go, batch and chunk sizes, engine knobs, schedule
settings, Kubernetes) are in no slice: they do not change what an asset computes. An asset not listed
in ``SLICES`` (a new one) gets every non-operational key: conservative, stale on any real change.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import dagster as dg

from bt_assets.config import REPO_ROOT, Profile

PACKAGE = "bt_assets"
# profile values, not code: their values are in the slices
NOT_CODE = {"bt_assets.config", "bt_assets.profile_sections"}
SLICE_KEY = "bt/profile_slice"

# Keys that change how or where an asset runs, never what it computes.
OPERATIONAL: tuple[str, ...] = (
    "profile_name",
    "extends",
    "paths",
    "k8s",
    "model.device",
    "generation.batch_size",
    "generation.chunk_problems",
    "generation.min_decode_rows",
    "generation.eos_check_every",
    "generation.scheduler",
    "generation.progress_every_s",
    "phase2.schedule_cron",
    "phase2.schedule_enabled",
    "phase2.allow_scale_above_one",
)

# --- the slices: groups of keys, then the keys each asset's own computation reads ----------------------
MODEL = ("model.id", "model.gguf_file", "model.dtype", "model.revision", "model.attn_implementation")
TOKENIZER = ("model.id", "model.gguf_file", "model.revision", "model.add_bos")
SAMPLING = (
    "generation.samples_per_prompt",
    "generation.max_new_tokens",
    "generation.temperature",
    "generation.top_p",
    "generation.top_k",
    "run.seed",
)
MODES = ("detection", "grading")
CELLS = (  # the cells the tables count (random_ablation: one condition per seed)
    "prompting.variants",
    "phase1.conditions",
    "phase1.ablation_variant",
    "ablation.random_seeds",
)
EVIDENCE = ("analysis.min_events_for_claims", "analysis.min_problems_for_claims")
SWEEP = (
    "phase2.subsets",
    "phase2.scale_sweep",
    "phase2.variant",
    "phase2.samples_per_prompt",
    "phase1.ablation_variant",
    "ablation.mode",
    "ablation.scale",
)
EVENT_PICK = ("analysis.variant", "analysis.max_events", "analysis.event_seed", "phase1.ablation_variant")
REPORT = (
    *CELLS,
    *MODES,
    "phase1.import_dir",
    "analysis",  # statistic, topk, event seed, truncation warning, evidence floor, ...
    "run.seed",
    "generation.max_new_tokens",
    "phase2.best_tradeoff_min_accuracy",
    "phase2.onset_resamples",
    "phase2.interventions",
    "model.id",
)
# figures are cheap to redraw and their drawing reads assorted settings: whole analysis/phase2 sections
FIGURE = (*CELLS, *MODES, "phase1.import_dir", "run.seed", "generation.max_new_tokens", "analysis", "phase2")

INTERVENE = (
    "phase2.interventions",
    "phase2.subsets",
    "phase2.variant",
    "phase2.samples_per_prompt",
    "phase1.ablation_variant",
    "detection.triggers_strict",
)
SLICES: dict[str, tuple[str, ...]] = {
    "problems": ("dataset",),
    "prompts": ("prompting", *TOKENIZER),
    "phase1_generations": (*MODEL, *TOKENIZER, *SAMPLING),
    "ablation_generations": (*MODEL, *TOKENIZER, *SAMPLING, "ablation", *CELLS),
    "baseline_events": (*TOKENIZER, *SAMPLING, *MODES, "prompting.variants"),
    "phase1_events": (*TOKENIZER, *SAMPLING, *MODES, *CELLS, "ablation", "phase1.import_dir"),
    "seed_compatible_tables": (*CELLS, "phase2.variant"),
    "metrics_corrected": (*CELLS, *MODES, "phase1.import_dir", "run.seed", *EVIDENCE),
    "event_sample": (*TOKENIZER, *MODES, *EVENT_PICK),
    "logit_lens": (*MODEL, *TOKENIZER),
    "ablation_scan": (*MODEL, *TOKENIZER, "analysis.components", "analysis.layers", "analysis.scan_scale"),
    "selected_layers": (
        "analysis.components",
        "analysis.topk",
        "analysis.statistic",
        "analysis.require_negative",
    ),
    "random_layers": (*MODEL, "model.num_layers", "ablation.random_seeds"),
    "sweep_prompts": ("prompting", *TOKENIZER, "phase2.n_problems", "phase2.use_system_prompt", *SWEEP),
    "sweep_generations": (*MODEL, *TOKENIZER, *SAMPLING, *SWEEP),
    "sweep_events": (*TOKENIZER, *SAMPLING, *MODES, *SWEEP),
    "sweep_results": (*SWEEP, *MODES, "run.seed", "phase2.best_tradeoff_min_accuracy", *EVIDENCE),
    "hook_stats": (*SAMPLING, *SWEEP),
    "continuation_ablation": (
        *MODEL,
        *TOKENIZER,
        "phase2.continuation",
        "phase2.subsets",
        "analysis.event_seed",
    ),
    "onset_resamples": (
        *MODEL,
        *TOKENIZER,
        *MODES,
        "phase2.onset_resamples",
        "phase2.subsets",
        "analysis.event_seed",
        "generation.temperature",
        "generation.top_p",
        "generation.top_k",
        "run.seed",
    ),
    "component_means": (*MODEL, *TOKENIZER, *MODES, "phase2.component_means", *INTERVENE),
    "steering_vectors": (*MODEL, *TOKENIZER, "phase2.steering", "phase2.interventions"),
    "head_scan_results": (*MODEL, *TOKENIZER, "phase2.head_scan", "phase2.interventions"),
    "intervention_generations": (*MODEL, *TOKENIZER, *SAMPLING, *INTERVENE, "phase2.head_scan"),
    "intervention_events": (*TOKENIZER, *SAMPLING, *MODES, *INTERVENE, "phase2.head_scan"),
    "intervention_results": (*INTERVENE, *MODES, "run.seed", *EVIDENCE),
    "phase1_report": REPORT,
    "phase2_report": REPORT,
    "original_run_report": REPORT,
}


def slice_keys(asset_name: str) -> tuple[str, ...] | None:
    """The keys of ``asset_name``'s slice; figures share one; None for an asset not listed."""
    if asset_name.startswith("fig_"):
        return FIGURE
    return SLICES.get(asset_name)


def _lookup(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _without(tree: Mapping[str, Any], dotted: Iterable[str]) -> dict[str, Any]:
    """``tree`` minus the dotted keys (a copy)."""
    out = json.loads(json.dumps(tree))
    for key in dotted:
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def profile_slice(profile: Profile, asset_name: str) -> dict[str, Any]:
    """The profile values ``asset_name``'s output depends on: ``{dotted key: value}`` for a listed asset,
    every non-operational key (as one nested mapping under ``*``) otherwise."""
    tree = _without(profile.model_dump(mode="json"), OPERATIONAL)
    keys = slice_keys(asset_name)
    if keys is None:
        return {"*": tree}
    return {k: _lookup(tree, k) for k in sorted(set(keys)) if k not in OPERATIONAL}


# --- code ----------------------------------------------------------------------------------------------
def _module_file(name: str) -> Path | None:
    base = REPO_ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(name: str, tree: ast.AST) -> set[str]:
    """``bt_assets`` modules that ``name``'s source imports (``from pkg import mod`` names the module)."""
    is_pkg = _module_file(name) == REPO_ROOT.joinpath(*name.split("."), "__init__.py")
    package = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] == PACKAGE and _module_file(m) and m not in NOT_CODE}


def _code_tree(source: str) -> str:
    """The module's syntax tree without docstrings: what runs, not how it is written or explained."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body[:1] = [] if len(body) > 1 else [ast.Pass()]
    return ast.dump(tree, annotate_fields=False)


@functools.cache
def _closure(module: str) -> dict[str, str]:
    """``module`` and every ``bt_assets`` module it imports, transitively: name -> code tree."""
    seen: dict[str, str] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        source = path.read_text(encoding="utf-8")
        seen[name] = _code_tree(source)
        todo += sorted(_imports(name, ast.parse(source)) - seen.keys())
    return seen


def code_modules(module: str) -> set[str]:
    """The modules whose code is part of ``module``'s assets' code versions."""
    return set(_closure(module))


@functools.cache
def code_hash(module: str) -> str:
    """sha256 over ``module`` and every ``bt_assets`` module it imports, transitively."""
    digest = hashlib.sha256()
    for name, tree in sorted(_closure(module).items()):
        digest.update(f"{name}\n{tree}\n".encode())
    return digest.hexdigest()


# --- applying them -------------------------------------------------------------------------------------
def code_version(profile: Profile, asset_name: str, module: str) -> str:
    """The asset's code version: sha256 of its profile slice and its code, 16 hex chars."""
    blob = json.dumps(profile_slice(profile, asset_name), sort_keys=True, default=str)
    return hashlib.sha256(f"{blob}\n{code_hash(module)}".encode()).hexdigest()[:16]


def versioned(profile: Profile, stage: ModuleType, defs: Sequence[Any]) -> list[Any]:
    """``defs`` (one stage's assets and checks) with every asset's code version and slice metadata."""

    def apply(spec: dg.AssetSpec) -> dg.AssetSpec:
        name = spec.key.path[-1]
        meta = {SLICE_KEY: dg.MetadataValue.json(profile_slice(profile, name))}
        version = code_version(profile, name, stage.__name__)
        return spec.replace_attributes(code_version=version).merge_attributes(metadata=meta)

    def is_asset(d: Any) -> bool:  # checks subclass AssetsDefinition but hold no asset specs
        return isinstance(d, dg.AssetsDefinition) and not isinstance(d, dg.AssetChecksDefinition)

    return [d.map_asset_specs(apply) if is_asset(d) else d for d in defs]
