"""Worker liveness. The filesystem broker has no remote control, so the database keeps it:
each worker process registers a row and touches `last_seen` from a background thread."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from backend.db.models import Worker, utcnow
from backend.settings import settings


def register_worker(
    *, session: Session, worker_id: str, host: str, pid: int, device: dict[str, Any] | None = None
) -> Worker:
    """Insert (or revive) the row of a starting worker, with what it trains on."""
    worker = session.get(Worker, worker_id) or Worker(id=worker_id, host=host, pid=pid)
    worker.host, worker.pid, worker.last_seen = host, pid, utcnow()
    worker.device = device
    session.add(worker)
    return worker


def touch_worker(*, session: Session, worker_id: str) -> bool:
    """Refresh `last_seen`; False if the row vanished (then the caller registers again)."""
    result = session.execute(
        update(Worker)
        .where(Worker.id == worker_id)
        .values(last_seen=utcnow())
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def remove_worker(*, session: Session, worker_id: str) -> None:
    """Forget a worker that shut down cleanly."""
    session.execute(delete(Worker).where(Worker.id == worker_id))


def live_workers(session: Session, timeout_s: float | None = None) -> list[Worker]:
    """Workers seen within the heartbeat timeout (the API's /api/health reports these)."""
    cutoff = utcnow() - timedelta(seconds=timeout_s or settings.heartbeat_timeout_s)
    return list(
        session.scalars(
            select(Worker).where(Worker.last_seen >= cutoff).order_by(Worker.started_at)
        )
    )


def prune_workers(*, session: Session, older_than_s: float) -> int:
    """Drop rows of workers gone for a long time (killed ones never say goodbye)."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    return session.execute(delete(Worker).where(Worker.last_seen < cutoff)).rowcount
