"""Run schemas (docs/design.md, "Schema families"): what the API accepts and returns for a run."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, computed_field, field_validator

from bnlab.core.registry import RunKind, RunStatus
from bnlab.core.schema.experiment import ExperimentConfig, in_field_order
from bnlab.core.schema.netspec import place_of

# POST /api/runs takes a plain ExperimentConfig: the submission *is* the config.
RunCreate = ExperimentConfig


def finite_or_none(value: Any) -> Any:
    """Replace NaN/inf (a diverged run's numbers) by None, recursively: JSON has no NaN."""
    if isinstance(value, dict | list):
        try:  # the usual case, no NaN anywhere: one C-speed pass instead of a Python walk
            json.dumps(value, allow_nan=False)
            return value
        except (ValueError, TypeError):
            pass
    return _finite_walk(value)


def _finite_walk(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_walk(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_walk(v) for v in value]
    return value


class LayerPlace(BaseModel):
    """Where a reported layer sits, read from its name (bnlab/core/schema/netspec.py place_of):
    lets a view group 50-300 BN layers by stage."""

    index: int
    name: str
    stage: int | None  # residual nets: 1-based stage (dense block); transitions: the one before
    unit: int | None  # 1-based unit in its stage; mlp/cnn: the block (blocks.0 is unit 1)
    place: str  # unit | transition | head | block | other


class RunPublic(BaseModel):
    """One run as the API shows it (GET /api/runs/{id})."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    status: RunStatus
    config: dict[str, Any]
    tags: list[str]
    sweep_id: int | None
    created_at: datetime
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    host: str | None
    device: str | None
    progress: float  # 0..1 of the planned optimizer steps
    step: int  # last probed optimizer step
    # a script run's planned steps (bnlab.init(total_steps=)); null: engine runs (progress comes
    # from their worker) and scripts that did not say (their progress stays 0 until the end)
    total_steps: int | None = None
    attempt: int  # 1 on the first claim, +1 for every retry after a lost worker
    cancel_requested: bool
    error: str | None
    layer_names: list[str] | None
    summary: dict[str, Any] | None
    kind: RunKind = "engine"  # "script": streamed by the SDK from a user's own training loop

    @field_validator("summary", mode="before")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        return finite_or_none(value)

    @field_validator("config", mode="before")
    @classmethod
    def _config(cls, value: Any) -> Any:
        return in_field_order(finite_or_none(value))

    @field_validator("progress", mode="before")
    @classmethod
    def _progress(cls, value: Any) -> Any:
        return value if value is not None and math.isfinite(value) else 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def layer_places(self) -> list[LayerPlace] | None:
        """Per reported layer (same order as layer_names), its stage, unit and place."""
        if self.layer_names is None:
            return None
        return [LayerPlace(index=i, **place_of(n)) for i, n in enumerate(self.layer_names)]


class RunsPublic(BaseModel):
    """A page of runs plus the total count matching the filters."""

    data: list[RunPublic]
    count: int
