"""Sweep schemas: a base config, a grid over dotted config paths and optional seeds."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from bnlab.core.schema.experiment import ExperimentConfig
from bnlab.core.schema.runs import RunPublic

MAX_GRID_KEYS = 64
DottedPath = Annotated[
    str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*$")
]


class SweepCreate(BaseModel):
    """POST /api/sweeps: every grid cell (x every seed) becomes one run."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)  # default: the base config's name
    base: ExperimentConfig = Field(default_factory=ExperimentConfig)
    # At most MAX_GRID_KEYS keys (a config has fewer fields than that), so refusing a huge grid
    # costs one length check, stated in the schema as maxProperties.
    grid: dict[DottedPath, Annotated[list[Any], Field(min_length=1)]] = Field(
        default_factory=dict, max_length=MAX_GRID_KEYS
    )
    seeds: (
        Annotated[list[Annotated[int, Field(ge=0, le=2**31 - 1)]], Field(min_length=1)] | None
    ) = None


class SweepPublic(BaseModel):
    """A created sweep with its runs."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    base: dict[str, Any]
    grid: dict[str, Any]
    seeds: list[int] | None
    created_at: datetime
    runs: list[RunPublic]
