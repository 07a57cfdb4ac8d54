"""Schemas of the runs table's group-by and bulk actions (GET /api/runs/groups, POST
/api/runs/bulk)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Tag = Field(min_length=1, max_length=64, pattern=r"^[^\x00]*$")


class MetricStats(BaseModel):
    """Over a group's runs that have the value: count, mean, sample sd (null for n < 2), range."""

    n: int
    mean: float | None
    sd: float | None
    min: float | None
    max: float | None


class RunGroup(BaseModel):
    value: Any  # the config value shared by the group (null: runs without the field)
    n: int
    ids: list[int]  # newest first
    metrics: dict[str, MetricStats]


class RunGroupsPublic(BaseModel):
    groups: list[RunGroup]
    count: int  # runs matching the filters


class BulkAction(BaseModel):
    """Tag, untag or delete many runs at once."""

    model_config = ConfigDict(extra="forbid")

    # run ids are 32-bit in the database: larger ones are refused here (a 422 naming `ids`), not
    # by the database (a DataError; schemathesis found it)
    ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(min_length=1, max_length=10_000)
    action: Literal["tag", "untag", "delete"]
    tags: list[str] = Field(default_factory=list, max_length=32)

    def tag_list(self) -> list[str]:
        return [t.strip() for t in self.tags if t.strip()]


class BulkSkip(BaseModel):
    id: int
    reason: str


class BulkResult(BaseModel):
    action: str
    done: list[int]  # ids tagged/untagged/deleted
    skipped: list[BulkSkip]  # missing runs, runs still queued or running (delete)
