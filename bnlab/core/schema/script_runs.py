"""What the SDK's REST endpoints take and give (issue 15). The ingest body itself is parsed by
hand in crud/script_runs.py (pydantic over 100k values per request costs more than storing them).
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, Strict, field_validator

from bnlab.core.schema.runs import RunPublic

NoNul = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL
# A key is the client's random secret for its run: long enough not to be guessed.
Key = Field(min_length=32, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")
ScriptEnd = Literal["succeeded", "failed", "cancelled", "diverged"]
MAX_STEP = 2**31 - 1  # steps are 32-bit integers in the database
# Planned optimizer steps: a JSON integer (strict: not 1.5, "100" or true), 1 to MAX_STEP.
TotalSteps = Annotated[int, Strict(), Field(ge=1, le=MAX_STEP)]
Step = Annotated[int, Strict(), Field(ge=0, le=MAX_STEP)]
# What a run stores besides its points is bounded, so no run can make the run list (or the
# database row) huge: the summary /finish sends (the SDK's for a 4,096-layer model is ~1 MB at
# most) and the config a script run is created with, as compact JSON.
MAX_SUMMARY_BYTES = 2 * 2**20
MAX_CONFIG_BYTES = 256 * 2**10


def json_size(value: Any, cap: int) -> Any:
    """`value` if its compact JSON is at most `cap` bytes, else ValueError naming the cap."""
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > cap:
        raise ValueError(f"is {size} bytes of JSON; at most {cap} bytes")
    return value


def storable(value: Any) -> Any:
    """Refuse what PostgreSQL's JSON cannot hold, anywhere in a document: NUL characters (in
    keys too; schemathesis found one in a config key) and non-finite numbers."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must hold finite numbers only (send null)")
    if isinstance(value, dict):
        for key, item in value.items():
            storable(key)
            storable(item)
    elif isinstance(value, list):
        for item in value:
            storable(item)
    return value


class ScriptRunCreate(BaseModel):
    """POST /api/script-runs: a run the SDK streams from a user's own training loop."""

    model_config = ConfigDict(extra="forbid")

    key: str = Key
    name: str = Field(min_length=1, max_length=200, pattern=NoNul)
    config: dict[str, Any] = Field(
        default_factory=dict,
        description=f"the user's own config; at most {MAX_CONFIG_BYTES} bytes as compact JSON",
        json_schema_extra={"x-max-json-bytes": MAX_CONFIG_BYTES},
    )
    tags: list[str] = Field(default_factory=list, max_length=50)
    host: str | None = Field(None, max_length=200, pattern=NoNul)
    device: str | None = Field(None, max_length=200, pattern=NoNul)
    layer_names: list[str] | None = Field(None, max_length=4096)
    total_steps: TotalSteps | None = Field(
        None,
        description="planned optimizer steps: progress is step / total_steps while the run "
        "runs (at most 0.99), 1 when it succeeds; without it progress stays 0 until the end",
    )
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

    @field_validator("config", "layer_names")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        return storable(value)

    @field_validator("config")
    @classmethod
    def _config_size(cls, value: Any) -> Any:
        return json_size(value, MAX_CONFIG_BYTES)

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str]) -> list[str]:
        for t in tags:
            if not 0 < len(t) <= 64 or "\x00" in t:
                raise ValueError("each tag is 1-64 characters")
        return list(dict.fromkeys(tags))


class ScriptRunResume(BaseModel):
    """POST /api/runs/{id}/resume: the restarted script's new key (and, if the plan changed,
    its new planned length). The request proves it may continue the run with one of the run's
    existing keys in X-Bnlab-Run-Key (the API token alone is not enough), unless `key` is
    already the run's (a spool's resume line sent again)."""

    model_config = ConfigDict(extra="forbid")

    key: str = Key
    total_steps: TotalSteps | None = None


class ScriptRunFinish(BaseModel):
    """POST /api/runs/{id}/finish: how the script ended."""

    model_config = ConfigDict(extra="forbid")

    status: ScriptEnd
    summary: dict[str, Any] | None = Field(
        None,
        description=f"what the script reports at its end; at most {MAX_SUMMARY_BYTES} bytes as "
        "compact JSON (larger: 422 naming summary)",
        json_schema_extra={"x-max-json-bytes": MAX_SUMMARY_BYTES},
    )
    error: str | None = Field(None, max_length=10_000, pattern=NoNul)

    @field_validator("summary")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        return json_size(storable(value), MAX_SUMMARY_BYTES)


class ScriptRunCreated(RunPublic):
    """The run, and whether this request created it (False: the key named an existing run)."""

    created: bool


class Heartbeat(BaseModel):
    """POST /api/runs/{id}/heartbeat (the body is optional): the loop's current step, which
    moves the run's progress between probes. Other fields are ignored (a newer client may
    say more)."""

    model_config = ConfigDict(extra="ignore")

    step: Step | None = None


class HeartbeatPublic(BaseModel):
    """The run as the server has it: the SDK stops the loop once cancel_requested is true."""

    status: str
    cancel_requested: bool  # someone pressed Cancel in the dashboard
    progress: float


class IngestPublic(BaseModel):
    """What one ingest request stored (rows written; re-sent points overwrite themselves)."""

    run_id: int
    metric_rows: int
    layer_rows: int
    extra_rows: int
    last_step: int
    status: str  # the run's status, and whether someone pressed Cancel: every points answer
    cancel_requested: bool  # tells the SDK, as the heartbeat does
    progress: float


class ExtraSeries(BaseModel):
    step: list[int]
    value: list[float | None]


class ExtraMetricsPublic(BaseModel):
    """GET /api/runs/{id}/extra-metrics: a run's metrics outside the fixed columns."""

    metrics: dict[str, ExtraSeries]
