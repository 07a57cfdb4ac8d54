"""What the SDK's REST endpoints take and give (issue 15). The ingest body itself is parsed by
hand in crud/script_runs.py (pydantic over 100k values per request costs more than storing them).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from backend.schema.runs import RunPublic

NoNul = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL
# A key is the client's random secret for its run: long enough not to be guessed.
Key = Field(min_length=32, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")
ScriptEnd = Literal["succeeded", "failed", "cancelled", "diverged"]


class ScriptRunCreate(BaseModel):
    """POST /api/script-runs: a run the SDK streams from a user's own training loop."""

    model_config = ConfigDict(extra="forbid")

    key: str = Key
    name: str = Field(min_length=1, max_length=200, pattern=NoNul)
    config: dict[str, Any] = Field(default_factory=dict, description="the user's own config")
    tags: list[str] = Field(default_factory=list, max_length=50)
    host: str | None = Field(None, max_length=200, pattern=NoNul)
    device: str | None = Field(None, max_length=200, pattern=NoNul)
    layer_names: list[str] | None = Field(None, max_length=4096)
    # when the script started (a synced spool is late): an RFC 3339 string with an offset, as
    # the schema says, not a number or a naive time (schemathesis found both). Not Strict():
    # in strict mode pydantic refuses the string too (FastAPI validates parsed JSON).
    started_at: AwareDatetime | None = None

    @field_validator("started_at", mode="before")
    @classmethod
    def _rfc3339(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError("must be an RFC 3339 date-time string with an offset")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str]) -> list[str]:
        for t in tags:
            if not 0 < len(t) <= 64 or "\x00" in t:
                raise ValueError("each tag is 1-64 characters")
        return list(dict.fromkeys(tags))


class ScriptRunResume(BaseModel):
    """POST /api/runs/{id}/resume: the restarted script's new key."""

    model_config = ConfigDict(extra="forbid")

    key: str = Key


class ScriptRunFinish(BaseModel):
    """POST /api/runs/{id}/finish: how the script ended."""

    model_config = ConfigDict(extra="forbid")

    status: ScriptEnd
    summary: dict[str, Any] | None = None
    error: str | None = Field(None, max_length=10_000, pattern=NoNul)


class ScriptRunCreated(RunPublic):
    """The run, and whether this request created it (False: the key named an existing run)."""

    created: bool


class HeartbeatPublic(BaseModel):
    status: str
    cancel_requested: bool  # someone pressed Cancel in the dashboard


class IngestPublic(BaseModel):
    """What one ingest request stored (rows written; re-sent points overwrite themselves)."""

    run_id: int
    metric_rows: int
    layer_rows: int
    extra_rows: int
    last_step: int


class ExtraSeries(BaseModel):
    step: list[int]
    value: list[float | None]


class ExtraMetricsPublic(BaseModel):
    """GET /api/runs/{id}/extra-metrics: a run's metrics outside the fixed columns."""

    metrics: dict[str, ExtraSeries]
