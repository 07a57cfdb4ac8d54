"""Health: can we reach the database and the broker, and which workers are alive?"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Response, status
from pydantic import BaseModel
from sqlalchemy import text

from backend import broker
from backend.api.deps import SessionDep
from backend.crud.workers import live_workers as read_workers

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)
BROKER_TIMEOUT_S = 2.0


class HealthPublic(BaseModel):
    """GET /api/health. 200: the API can serve (status "ok", or "degraded" while only the broker
    is unreachable: runs are stored and the reconciler enqueues them later). 503: the database
    is unreachable, so an orchestrator's readiness probe takes this replica out. New fields may
    be added (clients ignore what they do not know)."""

    status: str  # "ok"; "degraded": the broker does not answer; "unavailable": the database
    database: str  # "ok" or the error
    broker: str  # "ok" or the error
    workers: list[dict[str, Any]]  # live workers (heartbeat recent), if the worker table exists


def check_database(session: SessionDep) -> str:
    try:
        session.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:  # noqa: BLE001 - health reports failures instead of raising them
        session.rollback()
        return f"error: {type(exc).__name__}"


def check_broker() -> str:
    try:
        with broker.celery_app.connection_for_write() as conn:
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT_S
            )
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"error: {type(exc).__name__}"


def live_workers(session: SessionDep) -> list[dict[str, Any]]:
    try:
        return [w if isinstance(w, dict) else _as_dict(w) for w in read_workers(session=session)]
    except Exception as exc:  # noqa: BLE001
        session.rollback()
        log.warning("could not list workers: %s", type(exc).__name__)
        return []


def _as_dict(row: Any) -> dict[str, Any]:
    cols = getattr(getattr(row, "__table__", None), "columns", [])
    return {c.name: _jsonable(getattr(row, c.name)) for c in cols} or {"worker": str(row)}


def _jsonable(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


@router.get(
    "/health",
    response_model=HealthPublic,
    responses={
        503: {"model": HealthPublic, "description": "the database is unreachable (not ready)"}
    },
)
def read_health(session: SessionDep, response: Response) -> HealthPublic:
    """Database, broker and worker status: 200 while the database answers (the body says what
    else is degraded), 503 with the same body when it does not."""
    database = check_database(session)
    workers = live_workers(session) if database == "ok" else []
    broker_state = check_broker()
    if database != "ok":
        state = "unavailable"
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    else:
        state = "ok" if broker_state == "ok" else "degraded"
    return HealthPublic(status=state, database=database, broker=broker_state, workers=workers)
