"""The ``phase2.interventions`` entries (one discriminated union on ``kind``) and the settings of the
assets they draw on (``phase2.steering``, ``phase2.head_scan``, ``phase2.component_means``). The science
and the model-dependent checks (layers, heads, token ids) are in ``bt_assets.lib.interventions``."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator, field_validator, model_validator

from bt_assets.section_types import Fraction01, NonEmptyStr, NonNegFloat, NonNegInt, PosInt, Strict


def _penalty(v: Any) -> float | str:
    """A logit penalty: a finite number >= 0, or "inf" (a ban)."""
    if v == "inf":
        return "inf"
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{v!r} is not a penalty (a number >= 0, or 'inf' for a ban)")
    return float(v)


def _layer_or_auto(v: Any) -> int | str:
    """A layer index >= 0, or "auto"."""
    if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
        return v
    raise ValueError(f"{v!r} is not a layer (an integer >= 0, or 'auto')")


# plain validators: a union would add its members' tags to the error's key
Penalty = Annotated[float | str, PlainValidator(_penalty)]
LayerOrAuto = Annotated[int | str, PlainValidator(_layer_or_auto)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+$")]


class _Intervention(Strict):
    """One ``phase2.interventions`` entry: a named intervention and its strengths, one cell each
    (``intervention=<name>,strength=<s>``); ``bt_assets.lib.interventions`` has the science."""

    name: Name

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v == "baseline":
            raise ValueError("'baseline' is reserved for the shared baseline cell; choose another name")
        return v

    @field_validator("strengths", check_fields=False)
    @classmethod
    def _distinct(cls, v: list) -> list:
        shown = [x if x == "inf" else f"{x:g}" for x in v]  # the partition keys' spelling
        if len(set(shown)) != len(shown):
            raise ValueError(f"duplicate strengths {shown}")
        return v


class ScaleIntervention(_Intervention):
    """Multiply a subset's attention/MLP outputs by each strength (1 = no-op)."""

    kind: Literal["scale"]
    subset: str
    strengths: list[NonNegFloat] = Field([0.0, 0.5], min_length=1)


class MeanIntervention(_Intervention):
    """Mean ablation of a subset: out + w (mean - out), w = each strength in [0, 1] (0 = no-op)."""

    kind: Literal["mean"]
    subset: str
    strengths: list[Fraction01] = Field([1.0], min_length=1)


class HeadsIntervention(_Intervention):
    """Multiply chosen heads' context vectors by each strength (1 = no-op): ``heads`` [layer, head]
    pairs and/or the top ``from_head_scan`` heads of the head scan."""

    kind: Literal["heads"]
    heads: list[tuple[NonNegInt, NonNegInt]] = []
    from_head_scan: PosInt | None = None
    strengths: list[NonNegFloat] = Field([0.0], min_length=1)

    @model_validator(mode="after")
    def _some_heads(self) -> HeadsIntervention:
        if not self.heads and self.from_head_scan is None:
            raise ValueError(f"intervention {self.name!r} names no heads: give heads or from_head_scan")
        if len({tuple(h) for h in self.heads}) != len(self.heads):
            raise ValueError(f"intervention {self.name!r}: duplicate heads {self.heads}")
        return self


class SteerIntervention(_Intervention):
    """Add alpha x (mean residual norm) x v after ``layer`` ("auto": best held-out AUC); v the unit
    difference of means (BT onset vs controls); strengths = the alphas, both signs (0 = no-op)."""

    kind: Literal["steer"]
    layer: LayerOrAuto = "auto"
    strengths: list[float] = Field([-4.0, -2.0, 2.0], min_length=1)


class TokenBanIntervention(_Intervention):
    """Lower the trigger tokens' logits at every decode step by each strength ("inf": a ban; 0 =
    no-op). ``triggers`` default: ``detection.triggers_strict``; the family: the whole-word first token
    of every casing of each trigger's first word, with/without a leading space (``lib.token_family``)."""

    kind: Literal["token_ban"]
    triggers: Annotated[list[NonEmptyStr], Field(min_length=1)] | None = None
    strengths: list[Penalty] = Field(["inf"], min_length=1)


InterventionCfg = Annotated[
    ScaleIntervention | MeanIntervention | HeadsIntervention | SteerIntervention | TokenBanIntervention,
    Field(discriminator="kind"),
]


class SteeringCfg(Strict):
    """steering_vectors: difference of means per layer, a held-out split of problems for the AUC."""

    heldout_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.3
    seed: int = 0


class HeadScanCfg(Strict):
    """head_scan: every head of ``layers`` scaled by ``scale`` at the onset prediction position."""

    scale: Fraction01 = 0.0
    layers: Literal["all"] | Annotated[list[NonNegInt], Field(min_length=1)] = "all"
    statistic: Literal["delta_logit", "delta_logprob"] = "delta_logit"
    require_negative: bool = False


class ComponentMeansCfg(Strict):
    """component_means: mean attention/MLP outputs over the decode positions of baseline completions."""

    max_completions: PosInt = 64
    seed: int = 0
