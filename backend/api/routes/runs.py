"""Runs: submit, list, read, cancel, retry, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from backend.api.deps import MAX_ID, RunDep, SessionDep, TokenDep
from backend.api.errors import responses
from backend.api.series_cache import cache as series_cache
from backend.crud import runs as crud
from backend.crud.errors import FieldError
from backend.db.models import RUN_STATUSES, Run
from backend.schema.runs import RunCreate, RunPublic, RunsPublic

router = APIRouter(prefix="/runs", tags=["runs"], responses=responses(401, 404, 409))
NoNul = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL


def parse_status(values: list[str] | None) -> list[str]:
    """`?status=queued,running&status=failed` → the statuses, each a known one."""
    wanted = [s.strip() for v in values or [] for s in v.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in RUN_STATUSES]
    if unknown:
        raise FieldError("status", f"unknown status {unknown}; known: {list(RUN_STATUSES)}", "query")
    return wanted


@router.post("", status_code=status.HTTP_201_CREATED, response_model=RunPublic,
             dependencies=[TokenDep])
def create_run(session: SessionDep, config: RunCreate) -> Run:
    """Submit one ExperimentConfig; the run starts `queued`."""
    return crud.create_run(session=session, config=config)


@router.get("", response_model=RunsPublic)
def read_runs(
    session: SessionDep,
    status: Annotated[list[str] | None, Query(description="one or more of " + ", ".join(RUN_STATUSES))] = None,
    sweep: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    tag: Annotated[str | None, Query(max_length=64, pattern=NoNul)] = None,
    text: Annotated[str | None, Query(max_length=200, pattern=NoNul, description="in the name")] = None,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> RunsPublic:
    """Runs, newest first, filtered and paginated."""
    runs, count = crud.read_runs(session=session, status=parse_status(status), sweep_id=sweep,
                                 tag=tag, text=text, offset=offset, limit=limit)
    return RunsPublic(data=[RunPublic.model_validate(r) for r in runs], count=count)


@router.get("/{run_id}", response_model=RunPublic)
def read_run(run: RunDep) -> Run:
    """One run: config, status, timestamps, device, progress, attempt, error, summary."""
    return run


@router.post("/{run_id}/cancel", response_model=RunPublic, dependencies=[TokenDep])
def cancel_run(session: SessionDep, run: RunDep) -> Run:
    """Queued: cancelled at once. Running: stops within one probe interval."""
    return crud.request_cancel(session=session, run=run)


@router.post("/{run_id}/retry", status_code=status.HTTP_201_CREATED, response_model=RunPublic,
             dependencies=[TokenDep])
def retry_run(session: SessionDep, run: RunDep) -> Run:
    """A new run with the same config."""
    return crud.retry_run(session=session, run=run)


@router.delete("/{run_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[TokenDep])
def delete_run(session: SessionDep, run: RunDep) -> Response:
    """Remove an ended run, its series and its exports (409 while it is queued or running)."""
    run_id = run.id
    crud.delete_run(session=session, run=run)
    series_cache.drop_run(run_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
