"""The value types every profile section is built from (``profile_sections``, ``intervention_sections``):
``Strict`` models (an unknown key, a wrong type, nan/inf fail at load naming the key) and constrained
scalars."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from bt_assets.lib.hooks import COMPONENTS

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction01 = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegFloat = Annotated[float, Field(ge=0.0)]
NonEmptyStr = Annotated[str, Field(min_length=1)]
Component = Literal[COMPONENTS]  # "attn" | "mlp"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
