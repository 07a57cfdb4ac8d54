"""Server-sent events: run status changes and new probe steps (the one async module).

Polls the runs table about once a second in a worker thread and emits only what changed:
`run` events {"id", "status", "progress", "step", "attempt", "error"} and `probe` events
{"run_id", "step"} when a run's newest probe step moves. One indexed query per tick, which
reads only active runs, runs seen active since the last tick and runs newer than the last seen.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request
from sqlalchemy import func, or_, select
from sse_starlette import EventSourceResponse

from backend.db.models import TERMINAL_STATUSES, Run
from backend.db.session import get_sessionmaker

router = APIRouter(tags=["events"])
log = logging.getLogger(__name__)
POLL_S = 1.0
FIELDS = (Run.id, Run.status, Run.progress, Run.step, Run.attempt, Run.error)


class Watch:
    """What one client has seen: the state of every tracked run and the newest run id."""

    def __init__(self, only: set[int] | None) -> None:
        self.only = only
        self.state: dict[int, tuple] = {}
        self.max_id: int | None = None

    def query(self):
        active = Run.status.not_in(TERMINAL_STATUSES)
        if self.only is not None:
            return select(*FIELDS).where(Run.id.in_(self.only))
        clauses = [active, Run.id.in_(list(self.state))]
        if self.max_id is not None:
            clauses.append(Run.id > self.max_id)
        return select(*FIELDS).where(or_(*clauses))

    def poll(self) -> list[tuple]:
        """One tick: the rows to compare (runs in a thread: sync SQLAlchemy)."""
        with get_sessionmaker()() as session:
            if self.max_id is None and self.only is None:
                self.max_id = session.scalar(select(func.max(Run.id))) or 0
            return [tuple(r) for r in session.execute(self.query())]

    def changes(self, rows: list[tuple]) -> list[dict[str, Any]]:
        events = []
        for row in rows:
            run_id, status, progress, step, attempt, error = row
            old = self.state.get(run_id)
            if old is None or old[:2] != (status, progress) or old[4:] != (attempt, error):
                events.append(
                    {
                        "event": "run",
                        "data": json.dumps(
                            {
                                "id": run_id,
                                "status": status,
                                "progress": progress,
                                "step": step,
                                "attempt": attempt,
                                "error": error,
                            }
                        ),
                    }
                )
            if step and (old is None or old[3] != step):
                events.append(
                    {"event": "probe", "data": json.dumps({"run_id": run_id, "step": step})}
                )
            self.state[run_id] = row
            self.max_id = max(self.max_id or 0, run_id)
            if status in TERMINAL_STATUSES and self.only is None:
                self.state.pop(run_id)  # ended: stop watching it
        return events


async def _events(request: Request, watch: Watch) -> AsyncIterator[dict[str, Any]]:
    while not await request.is_disconnected():
        try:
            rows = await anyio.to_thread.run_sync(watch.poll)
        except Exception as exc:  # noqa: BLE001 - database briefly unreachable: keep the stream, try again
            log.warning("event poll failed: %s", type(exc).__name__)
            rows = []
        for event in watch.changes(rows):
            yield event
        await asyncio.sleep(POLL_S)


def parse_ids(runs: str | None) -> set[int] | None:
    return {int(x) for x in runs.split(",") if x} if runs else None


@router.get(
    "/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def read_events(
    request: Request,
    runs: Annotated[
        str | None, Query(pattern=r"^\d{1,9}(,\d{1,9}){0,199}$", description="only these run ids")
    ] = None,
) -> EventSourceResponse:
    """`run` and `probe` events as they happen; `?runs=1,2` limits them to those runs."""
    return EventSourceResponse(_events(request, Watch(parse_ids(runs))), ping=15)
