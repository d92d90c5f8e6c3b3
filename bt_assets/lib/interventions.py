"""Interventions as typed things: resolved specs, their per-condition tables, and the frontier's cells.

Five kinds, all applied at decode steps only, row by row in the same batches as the baseline rows
(``Cell`` = one condition of the engine's per-row condition table) and with the same counter-based
uniforms, so every cell is paired with the baseline completion by completion:

| kind | what is intervened on, where | strength (its no-op value) |
|---|---|---|
| ``scale`` | a subset's attention/MLP outputs multiplied (``Cell.scales``, ``hooks``) | factor (1) |
| ``mean`` | a subset's outputs moved to their baseline mean: ``out + w (mean - out)`` | weight w (0) |
| ``heads`` | chosen heads' context vectors (o_proj input slices) multiplied | factor (1) |
| ``steer`` | ``alpha x norm x v`` added to the residual stream after one layer; v = unit | alpha (0) |
|  | difference of means (BT onset vs controls), norm = that layer's mean residual norm |  |
| ``token_ban`` | the trigger tokens' logits lowered by a penalty (``inf``: never sampled) | penalty (0) |

A profile entry of ``phase2.interventions`` (``profile_sections.InterventionCfg``) expands to one cell
per strength, keyed ``intervention=<name>,strength=<s>``, plus the shared baseline cell
``intervention=baseline,strength=none``. ``intervention_cells`` resolves every entry against the
model and the assets it needs (subsets/selected layers, component means, steering vectors, the head
ranking, the tokenizer) and fails naming the entry's key (``phase2.interventions.<i>...``).
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import torch
from torch import nn

from bt_assets.lib.hooks import COMPONENTS, decoder_layers
from bt_assets.lib.intervention_hooks import InterventionTables
from bt_assets.lib.sweeps import subset_components
from bt_assets.lib.token_family import token_family

NOOP = {"scale": 1.0, "mean": 0.0, "heads": 1.0, "steer": 0.0, "token_ban": 0.0}
BASELINE_KEY = "intervention=baseline,strength=none"


def _digest(values: Sequence[float]) -> str:
    """sha256 (16 hex) of float32 values: a vector's identity in a fingerprint."""
    return hashlib.sha256(struct.pack(f"<{len(values)}f", *values)).hexdigest()[:16]


@dataclass(frozen=True)
class HeadScale:
    """Multiply the context vector of each (layer, head) by ``scale`` (the head's slice of o_proj's input)."""

    heads: tuple[tuple[int, int], ...]
    scale: float
    source: str = field(default="", compare=False)  # the profile key, for errors

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "heads", "heads": sorted(self.heads), "scale": float(self.scale)}


@dataclass(frozen=True)
class MeanAblation:
    """Move each (component, layer) output towards its mean: ``out + weight (mean - out)``."""

    components: tuple[tuple[str, int], ...]
    weight: float
    means: tuple[tuple[float, ...], ...]  # one d_model mean per component, same order
    source: str = field(default="", compare=False)

    def fingerprint(self) -> dict[str, Any]:
        pairs = sorted(zip(self.components, (_digest(m) for m in self.means), strict=True))
        return {"kind": "mean", "components": pairs, "weight": float(self.weight)}


@dataclass(frozen=True)
class Steer:
    """Add ``alpha x norm x vector`` to the residual stream at the output of decoder ``layer``."""

    layer: int
    vector: tuple[float, ...]  # unit direction (difference of means)
    alpha: float  # in units of ``norm``
    norm: float  # mean residual-stream norm at that layer
    source: str = field(default="", compare=False)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "kind": "steer",
            "layer": self.layer,
            "vector": _digest(self.vector),
            "alpha": float(self.alpha),
            "norm": float(self.norm),
        }


@dataclass(frozen=True)
class LogitBan:
    """Subtract ``penalty`` from the logits of ``token_ids`` (inf: the tokens are never sampled)."""

    token_ids: tuple[int, ...]
    penalty: float
    source: str = field(default="", compare=False)

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "token_ban", "token_ids": sorted(self.token_ids), "penalty": str(float(self.penalty))}


Intervention = HeadScale | MeanAblation | Steer | LogitBan


def fingerprint_items(interventions: Sequence[Intervention]) -> list[dict[str, Any]]:
    """What ``GenerationStore.fingerprint`` hashes for a cell's interventions (order-independent)."""
    return sorted((iv.fingerprint() for iv in interventions), key=repr)


def _where(iv: Intervention) -> str:
    return iv.source or type(iv).__name__


def intervention_tables(
    model: nn.Module, conditions: Sequence[Sequence[Intervention]]
) -> InterventionTables | None:
    """Per-condition tables (row c = the interventions of condition c) for ``HookState.tables``; None
    when no condition has any. Raises ValueError naming the spec's key for a layer, head, vector or token
    id the model does not have."""
    if not any(conditions):
        return None
    n_cond, n_layers = len(conditions), len(decoder_layers(model))
    n_heads, d = model.config.num_attention_heads, model.config.hidden_size
    vocab = model.get_output_embeddings().weight.shape[0]
    kinds = {type(iv) for ivs in conditions for iv in ivs}
    heads = torch.ones(n_cond, n_layers, n_heads) if HeadScale in kinds else None
    weights = torch.zeros(n_cond, n_layers, len(COMPONENTS)) if MeanAblation in kinds else None
    means = torch.zeros(n_layers, len(COMPONENTS), d) if MeanAblation in kinds else None
    steer = torch.zeros(n_cond, n_layers, d) if Steer in kinds else None
    ban_ids = sorted(
        {t for ivs in conditions for iv in ivs if isinstance(iv, LogitBan) for t in iv.token_ids}
    )
    offsets = torch.zeros(n_cond, len(ban_ids)) if LogitBan in kinds else None

    def layer_ok(layer: int, iv: Intervention) -> None:
        if not 0 <= layer < n_layers:
            raise ValueError(f"{_where(iv)}: layer {layer} out of range for a {n_layers}-layer model")

    for c, ivs in enumerate(conditions):
        for iv in ivs:
            if isinstance(iv, HeadScale):
                for layer, head in iv.heads:
                    layer_ok(layer, iv)
                    if not 0 <= head < n_heads:
                        raise ValueError(f"{_where(iv)}: head {head} out of range for {n_heads} heads")
                    heads[c, layer, head] = iv.scale
            elif isinstance(iv, MeanAblation):
                for (comp, layer), mean in zip(iv.components, iv.means, strict=True):
                    layer_ok(layer, iv)
                    if len(mean) != d:
                        raise ValueError(f"{_where(iv)}: {comp}{layer} mean has {len(mean)} values, not {d}")
                    ci, vec = COMPONENTS.index(comp), torch.tensor(mean, dtype=torch.float32)
                    if means[layer, ci].any() and not torch.equal(means[layer, ci], vec):
                        raise ValueError(f"{_where(iv)}: two different means for {comp}{layer}")
                    means[layer, ci], weights[c, layer, ci] = vec, iv.weight
            elif isinstance(iv, Steer):
                layer_ok(iv.layer, iv)
                if len(iv.vector) != d:
                    raise ValueError(f"{_where(iv)}: steering vector has {len(iv.vector)} values, not {d}")
                steer[c, iv.layer] += iv.alpha * iv.norm * torch.tensor(iv.vector, dtype=torch.float32)
            else:
                bad = [t for t in iv.token_ids if not 0 <= t < vocab]
                if bad or not iv.token_ids:
                    raise ValueError(
                        f"{_where(iv)}: token ids {bad or '[]'} not in a {vocab}-token vocabulary"
                    )
                for t in iv.token_ids:
                    offsets[c, ban_ids.index(t)] = -iv.penalty
    return InterventionTables(
        head_scales=heads,
        mean_weights=weights,
        means=means,
        steer=steer,
        logit_ids=torch.tensor(ban_ids, dtype=torch.long) if offsets is not None else None,
        logit_offsets=offsets,
    )


def trigger_token_ids(tokenizer, triggers: Sequence[str], where: str) -> tuple[int, ...]:
    """The token family of backtracking triggers (``token_family.token_family``: the whole-word first
    token of each casing of each trigger's first word, with and without a leading space: "Wait" ->
    "Wait", " Wait", "wait", " wait", ...). A trigger with none fails naming ``where.<j>``
    (``phase2.interventions.<i>.triggers.<j>``): banning a fragment ("Act" of "Actually") would ban
    other words too."""
    out: set[int] = set()
    for j, trigger in enumerate(triggers):
        family = token_family(tokenizer, [trigger])
        if not family:
            raise ValueError(
                f"{where}.{j}: trigger {trigger!r} resolves to no token id (no casing of its first word "
                "starts with a whole-word token of this tokenizer)"
            )
        out |= family
    return tuple(sorted(out))


@dataclass(frozen=True)
class InterventionCell:
    """One cell of the frontier: a (intervention, strength) pair resolved to what the hooks apply."""

    key: str  # intervention=<name>,strength=<s>
    intervention: str  # the profile entry's name, or "baseline"
    kind: str  # scale | mean | heads | steer | token_ban | baseline
    strength: float
    scales: Mapping[tuple[str, int], float]  # kind scale only (Cell.scales)
    interventions: tuple[Intervention, ...]  # every other kind (Cell.interventions)

    @property
    def noop(self) -> bool:
        """At its kind's no-op strength: must equal the baseline token for token."""
        return is_noop(self.kind, self.strength)


def is_noop(kind: str, strength: float) -> bool:
    """The baseline, or a kind at its no-op strength (``NOOP``)."""
    return kind == "baseline" or strength == NOOP[kind]


def parse_strength(s: float | str) -> float:
    """A configured strength as a number ("inf": an infinite ban penalty)."""
    return math.inf if s == "inf" else float(s)


def fmt_strength(s: float | str) -> str:
    """A strength as partition keys spell it ("inf" for an infinite penalty)."""
    return "inf" if s == "inf" or (isinstance(s, float) and math.isinf(s)) else f"{float(s):g}"


def intervention_key(name: str, s: float | str) -> str:
    """The partition key of intervention ``name`` at strength ``s``."""
    return f"intervention={name},strength={fmt_strength(s)}"


def cell_table(cfgs: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per cell of ``phase2.interventions``, baseline first (no model needed): ``key``,
    ``intervention``, ``kind``, ``strength``, ``noop``: what the frontier labels its cells with."""
    rows: list[dict[str, Any]] = [
        {"key": BASELINE_KEY, "intervention": "baseline", "kind": "baseline", "strength": 0.0, "noop": True}
    ]
    for c in cfgs:
        for s in c.strengths:
            strength = parse_strength(s)
            rows.append({"key": intervention_key(c.name, s), "intervention": c.name, "kind": c.kind,
                         "strength": strength, "noop": is_noop(c.kind, strength)})  # fmt: skip
    return rows


def cell_keys(cfgs: Sequence[Any]) -> list[str]:
    """Every cell key of ``phase2.interventions`` (the static partitions), baseline first."""
    return [r["key"] for r in cell_table(cfgs)]


def steering_for(
    steering: pl.DataFrame | None, layer: int | str, where: str
) -> tuple[int, tuple[float, ...], float]:
    """(layer, unit vector, mean norm) from a ``steering.steering_table``: the fixed ``layer`` or, for
    "auto", the layer its held-out AUC chose."""
    from bt_assets.lib.steering import choose_layer

    if steering is None or steering.height == 0:
        raise ValueError(
            f"{where}.strengths: steering needs a vector, and the steering_vectors table is empty"
        )
    chosen = choose_layer(steering, layer, f"{where}.layer")
    row = steering.filter(pl.col("layer") == chosen).row(0, named=True)
    return chosen, tuple(float(x) for x in row["vector"]), float(row["act_norm_mean"])


def _means_of(means: pl.DataFrame | None, comps: Sequence[tuple[str, int]], where: str) -> tuple:
    if means is None:
        raise ValueError(f"{where}.subset: mean ablation needs the component_means table")
    table = {(r["component"], r["layer"]): r["mean"] for r in means.iter_rows(named=True)}
    missing = [c for c in comps if c not in table]
    if missing:
        raise ValueError(f"{where}.subset: no component mean for {missing}")
    return tuple(tuple(float(x) for x in table[c]) for c in comps)


def intervention_cells(
    cfgs: Sequence[Any],
    *,
    model: nn.Module | None,
    tokenizer=None,
    subsets: Mapping[str, Any] | None = None,
    selected: Mapping[str, Sequence[int]] | None = None,
    means: pl.DataFrame | None = None,
    steering: pl.DataFrame | None = None,
    head_ranking: Sequence[tuple[int, int]] | None = None,
    default_triggers: Sequence[str] = (),
    key: str = "phase2.interventions",
) -> list[InterventionCell]:
    """The frontier's cells, baseline first, in ``cell_keys`` order; each entry resolved and checked
    against ``model`` (layers, heads, d_model, vocabulary), so a bad entry fails here naming its key.
    ``model=None`` resolves without those checks (no weights needed): for reading cells that a checked
    resolution already generated; the cells, and so their chunk fingerprints, are the same.

    ``subsets``: name -> ``Subset`` config (kinds scale and mean), with ``selected`` (the Phase-1
    ``selected_layers``) for subsets ``from_selected``; ``means``: ``component_means.means_frame``;
    ``steering``: ``steering.steering_table``; ``head_ranking``: ``head_scan.select_heads`` of the whole
    scan (best first); ``default_triggers``: token_ban's triggers when the entry gives none (the
    profile's ``detection.triggers_strict``)."""
    cells = [InterventionCell(BASELINE_KEY, "baseline", "baseline", 0.0, {}, ())]
    for i, cfg in enumerate(cfgs):
        where = f"{key}.{i}"
        for s in cfg.strengths:
            strength = parse_strength(s)
            ivs: tuple[Intervention, ...] = ()
            scales: dict[tuple[str, int], float] = {}
            if cfg.kind in ("scale", "mean"):
                if subsets is None or cfg.subset not in subsets:
                    raise ValueError(f"{where}.subset: unknown subset {cfg.subset!r}")
                comps = subset_components(subsets[cfg.subset], selected)
                bad = [c for c in comps if model is not None and not 0 <= c[1] < len(decoder_layers(model))]
                if bad:
                    raise ValueError(f"{where}.subset: {bad} out of range for this model")
                if cfg.kind == "scale":
                    scales = {c: strength for c in comps}
                else:
                    ivs = (MeanAblation(tuple(comps), strength, _means_of(means, comps, where), where),)
            elif cfg.kind == "heads":
                chosen = [tuple(h) for h in cfg.heads]
                if cfg.from_head_scan is not None:
                    if not head_ranking:
                        raise ValueError(f"{where}.from_head_scan: the head scan selected no heads")
                    chosen += [tuple(h) for h in head_ranking[: cfg.from_head_scan]]
                ivs = (HeadScale(tuple(sorted(set(chosen))), strength, f"{where}.heads"),)
            elif cfg.kind == "steer":
                layer, vector, norm = steering_for(steering, cfg.layer, where)
                ivs = (Steer(layer, vector, strength, norm, f"{where}.layer"),)
            else:
                triggers = list(cfg.triggers) if cfg.triggers is not None else list(default_triggers)
                if tokenizer is None or not triggers:
                    raise ValueError(f"{where}.triggers: no triggers (or no tokenizer) to resolve")
                ids = trigger_token_ids(tokenizer, triggers, f"{where}.triggers")
                ivs = (LogitBan(ids, strength, f"{where}.triggers"),)
            key = intervention_key(cfg.name, s)
            cells.append(InterventionCell(key, cfg.name, cfg.kind, strength, scales, ivs))
    if model is not None:  # every range checked before decoding
        intervention_tables(model, [c.interventions for c in cells])
    return cells


def generation_cell(cell: InterventionCell, variant: str, prompts: pl.DataFrame):
    """The ``generation.Cell`` of a frontier cell (its key is its condition: every cell is its own)."""
    from bt_assets.lib.generation import Cell  # generation imports this module

    return Cell(
        key=cell.key,
        variant=variant,
        condition=cell.key,
        prompts=prompts,
        scales=dict(cell.scales),
        interventions=cell.interventions,
    )
