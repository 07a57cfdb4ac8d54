"""Run schemas (docs/design.md, "Schema families"): what the API accepts and returns for a run."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from backend.schema.experiment import ExperimentConfig
from backend.schema.registry import RunKind, RunStatus


# POST /api/runs takes a plain ExperimentConfig: the submission *is* the config.
RunCreate = ExperimentConfig


def finite_or_none(value: Any) -> Any:
    """Replace NaN/inf (a diverged run's numbers) by None, recursively: JSON has no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return value


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
    attempt: int  # 1 on the first claim, +1 for every retry after a lost worker
    cancel_requested: bool
    error: str | None
    layer_names: list[str] | None
    summary: dict[str, Any] | None
    kind: RunKind = "engine"  # "script": streamed by the SDK from a user's own training loop

    @field_validator("summary", "config", mode="before")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        return finite_or_none(value)

    @field_validator("progress", mode="before")
    @classmethod
    def _progress(cls, value: Any) -> Any:
        return value if value is not None and math.isfinite(value) else 0.0


class RunsPublic(BaseModel):
    """A page of runs plus the total count matching the filters."""

    data: list[RunPublic]
    count: int
