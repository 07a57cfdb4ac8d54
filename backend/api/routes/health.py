"""Health: can we reach the database and the broker, is there room on the data disk, does the
artifact store answer, and which workers are alive?"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.engine import make_url

from backend import broker
from backend.api.deps import SessionDep
from backend.artifacts import get_store
from backend.crud.workers import live_workers as read_workers
from backend.settings import settings

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)
BROKER_TIMEOUT_S = 2.0
STORE_TIMEOUT_S = 2.0


class DiskPublic(BaseModel):
    """One filesystem the server writes to, and whether it has room."""

    path: str  # the folder checked
    used_for: list[str]  # "data dir" (checkpoints, uploads, exports, embedded broker), "sqlite"
    free_bytes: int | None  # None when it could not be read (status says why)
    total_bytes: int | None
    min_free_bytes: int = Field(description="BNLAB_MIN_FREE_MB: below this the status is low")
    status: str  # "ok", "low" (free_bytes < min_free_bytes) or "error: <why>"


class ArtifactsPublic(BaseModel):
    """Where checkpoints, exports and uploads go (BNLAB_ARTIFACTS_URL; unset: the data dir)."""

    location: str
    status: str  # "ok" or "error: <why>" (not writable, bucket unreachable, ...)


class HealthPublic(BaseModel):
    """GET /api/health. 200: the API can serve (status "ok", or "degraded" while only the broker
    is unreachable: runs are stored and the reconciler enqueues them later). 503: the database
    is unreachable, so an orchestrator's readiness probe takes this replica out. New fields may
    be added (clients ignore what they do not know)."""

    # "ok"; "degraded": the broker does not answer, a disk is low or unreadable, or the artifact
    # store fails; "unavailable": the database
    status: str
    database: str  # "ok" or the error
    broker: str  # "ok" or the error
    workers: list[dict[str, Any]]  # live workers (heartbeat recent), if the worker table exists
    disks: list[DiskPublic] = []  # the data dir's disk, and the SQLite file's when elsewhere
    artifacts: ArtifactsPublic | None = None


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


def _sqlite_dir(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).resolve().parent


def check_disks() -> list[DiskPublic]:
    """The data dir's filesystem and, when the SQLite file lives on another, that one too."""
    wanted: list[tuple[Path, str]] = [(Path(settings.data_dir), "data dir")]
    sqlite_dir = _sqlite_dir(settings.database_url)
    if sqlite_dir is not None:
        wanted.append((sqlite_dir, "sqlite"))
    limit = settings.min_free_mb * 2**20
    disks: dict[Any, DiskPublic] = {}
    for path, role in wanted:
        try:
            device = os.stat(path).st_dev
            usage = shutil.disk_usage(path)
        except OSError as exc:
            disks[(path, role)] = DiskPublic(
                path=str(path),
                used_for=[role],
                free_bytes=None,
                total_bytes=None,
                min_free_bytes=limit,
                status=f"error: {exc.strerror or type(exc).__name__}",
            )
            continue
        if device in disks:  # one filesystem, reported once
            disks[device].used_for.append(role)
            continue
        disks[device] = DiskPublic(
            path=str(path),
            used_for=[role],
            free_bytes=usage.free,
            total_bytes=usage.total,
            min_free_bytes=limit,
            status="ok" if usage.free >= limit else "low",
        )
    return list(disks.values())


def check_artifacts() -> ArtifactsPublic:
    try:
        store = get_store()
    except Exception as exc:  # noqa: BLE001 - a bad BNLAB_ARTIFACTS_URL is reported, not raised
        return ArtifactsPublic(location=str(settings.artifacts_url), status=f"error: {exc}")
    return ArtifactsPublic(location=store.describe(), status=store.check(STORE_TIMEOUT_S))


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
    """Database, broker, disk, artifact store and worker status: 200 while the database answers
    (the body says what else is degraded), 503 with the same body when it does not."""
    database = check_database(session)
    workers = live_workers(session) if database == "ok" else []
    broker_state = check_broker()
    disks = check_disks()
    artifacts = check_artifacts()
    if database != "ok":
        state = "unavailable"
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    elif broker_state != "ok" or artifacts.status != "ok" or any(d.status != "ok" for d in disks):
        state = "degraded"
    else:
        state = "ok"
    return HealthPublic(
        status=state,
        database=database,
        broker=broker_state,
        workers=workers,
        disks=disks,
        artifacts=artifacts,
    )
