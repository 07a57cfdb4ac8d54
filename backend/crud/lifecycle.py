"""Run status transitions made by workers and the reconciler. The database is the source of
truth: every transition is one guarded UPDATE, so two processes can never both win it.

queued ──claim──► running ──finish──► succeeded | diverged | cancelled | failed
                     │ heartbeat stale (worker lost)
                     ├──► queued again (attempt < max_attempts), re-enqueued
                     ├──► failed "worker lost" (attempt >= max_attempts)
                     │ its worker is being stopped (SIGTERM to serve / the worker)
                     └──► queued again, the attempt given back (release_run), re-enqueued
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from backend.db.models import Run, utcnow
from bnlab.core.schema.runs import finite_or_none

WORKER_LOST = "worker lost"  # the error text of a run whose last attempt's worker died


def claim_run(
    *,
    session: Session,
    run_id: int,
    worker_id: str,
    host: str,
    device: str | None,
    stale_before: datetime,
) -> bool:
    """Atomically take a run for this worker; False means someone else has it (or it is done).

    Claimable: `queued`, or `running` with a stale heartbeat (its worker is dead), or `running`
    claimed by this very worker (the broker redelivered the message after its pool child died).
    """
    now = utcnow()
    result = session.execute(
        update(Run)
        .where(
            Run.id == run_id,
            Run.cancel_requested.is_(False),
            or_(
                Run.status == "queued",
                and_(
                    Run.status == "running",
                    or_(Run.heartbeat_at < stale_before, Run.claimed_by == worker_id),
                ),
            ),
        )
        .values(
            status="running",
            claimed_by=worker_id,
            host=host,
            device=device,
            # started_at keeps the first attempt's start: wall time spans every attempt.
            attempt=Run.attempt + 1,
            started_at=func.coalesce(Run.started_at, now),
            heartbeat_at=now,
            error=None,
            finished_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def heartbeat(*, session: Session, run_id: int, worker_id: str, **values: object) -> bool:
    """Touch the run's heartbeat (plus any extra columns); False when this worker lost it."""
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.claimed_by == worker_id, Run.status == "running")
        .values(heartbeat_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def finish_run(
    *,
    session: Session,
    run_id: int,
    worker_id: str,
    status: str,
    summary: dict | None = None,
    error: str | None = None,
) -> bool:
    """Record the final status of a run this worker holds; False when it no longer holds it."""
    values: dict = dict(status=status, finished_at=utcnow(), error=error)
    if summary is not None:
        values["summary"] = finite_or_none(summary)  # a diverged run's NaN: JSON has none
    if status == "succeeded":
        values["progress"] = 1.0
    return heartbeat(session=session, run_id=run_id, worker_id=worker_id, **values)


def _release(session: Session, held, now: datetime) -> list[int]:
    """Running runs matching `held` back to `queued`, the claim's attempt given back (a
    stopped worker is not a failed attempt); one with a cancel pending ends `cancelled`."""
    base = (
        update(Run)
        .where(Run.status == "running", held)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        base.where(Run.cancel_requested.is_(True)).values(status="cancelled", finished_at=now)
    )
    released = session.scalars(
        base.where(Run.cancel_requested.is_(False))
        .values(
            status="queued",
            claimed_by=None,
            attempt=case((Run.attempt > 0, Run.attempt - 1), else_=0),
            enqueued_at=now,
        )
        .returning(Run.id)
    ).all()
    return list(released)


def release_run(*, session: Session, run_id: int, worker_id: str) -> bool:
    """The worker holding `run_id` is shutting down: give the run back to the queue without
    spending an attempt (it resumes from its last checkpoint). Commits; the caller enqueues.
    False when this worker no longer held it."""
    released = _release(session, and_(Run.id == run_id, Run.claimed_by == worker_id), utcnow())
    session.commit()
    return bool(released)


def release_runs_of_workers(*, session: Session, worker_prefixes: Iterable[str]) -> list[int]:
    """Runs still claimed by worker processes that were stopped (killed after their grace
    period): their claims start with "<host>:<pid>:" (worker/identity.py). Commits; returns
    the ids given back to the queue (the caller enqueues them, or the reconciler does)."""
    prefixes = list(worker_prefixes)
    if not prefixes:
        return []
    held = or_(*(Run.claimed_by.startswith(p, autoescape=True) for p in prefixes))
    released = _release(session, held, utcnow())
    session.commit()
    return released


def fail_run(*, session: Session, run_id: int, error: str, worker_id: str | None = None) -> bool:
    """Mark a non-terminal run failed (by its worker, or by anyone when worker_id is None)."""
    stmt = update(Run).where(Run.id == run_id, Run.status.in_(("queued", "running")))
    if worker_id is not None:
        stmt = stmt.where(Run.claimed_by == worker_id)
    result = session.execute(
        stmt.values(status="failed", error=error, finished_at=utcnow()).execution_options(
            synchronize_session=False
        )
    )
    return result.rowcount == 1


def _commit_then_enqueue(
    session: Session, run_ids: list[int], enqueue: Callable[[int], None] | None
) -> None:
    # Commit the row first, then send the message (docs/design.md, "Commit, then enqueue"): a
    # worker that gets the message must find the run queued.
    session.commit()
    for run_id in run_ids if enqueue else ():
        enqueue(run_id)


def requeue_stale_runs(
    *,
    session: Session,
    timeout_s: float,
    max_attempts: int,
    enqueue: Callable[[int], None] | None = None,
    now: datetime | None = None,
) -> dict[str, list[int]]:
    """Runs whose worker stopped heartbeating go back to the queue (or fail after the last
    attempt, or end cancelled when a cancel was asked). Commits, then enqueues the requeued."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=timeout_s)
    stale = session.execute(
        select(Run.id, Run.attempt, Run.cancel_requested)
        # Script runs have no worker to requeue them: crud/script_runs.py ends them crashed.
        .where(
            Run.status == "running",
            Run.kind != "script",
            or_(Run.heartbeat_at < cutoff, Run.heartbeat_at.is_(None)),
        )
    ).all()
    out: dict[str, list[int]] = {"queued": [], "failed": [], "cancelled": []}
    for run_id, attempt, cancel in stale:
        if cancel:
            target = dict(status="cancelled", finished_at=now)
        elif attempt >= max_attempts:
            target = dict(status="failed", error=WORKER_LOST, finished_at=now)
        else:
            target = dict(status="queued", claimed_by=None, enqueued_at=now)
        # Guarded again: the worker may have come back between the SELECT and this UPDATE.
        result = session.execute(
            update(Run)
            .where(
                Run.id == run_id,
                Run.status == "running",
                or_(Run.heartbeat_at < cutoff, Run.heartbeat_at.is_(None)),
            )
            .values(**target)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            out[target["status"]].append(run_id)
    _commit_then_enqueue(session, out["queued"], enqueue)
    return out


def reconcile_queued(
    *,
    session: Session,
    in_broker: Iterable[int] | None,
    older_than_s: float,
    enqueue: Callable[[int], None] | None = None,
    now: datetime | None = None,
) -> list[int]:
    """Queued runs whose broker message is gone get a new one. `in_broker` holds the run ids
    the broker still carries (None: the broker cannot be inspected, so nothing is resent).
    Only runs enqueued more than `older_than_s` ago are considered, so a message in flight
    between `send_task` and the broker is not doubled. A doubled message is harmless anyway:
    the claim is atomic, so the second delivery finds the run taken and returns."""
    if in_broker is None:
        return []
    now = now or utcnow()
    present = set(in_broker)
    cutoff = now - timedelta(seconds=older_than_s)
    candidates = session.scalars(
        select(Run.id).where(
            Run.status == "queued",
            Run.cancel_requested.is_(False),
            # never sent (broker was down at submit): age by created_at
            or_(Run.enqueued_at < cutoff, and_(Run.enqueued_at.is_(None), Run.created_at < cutoff)),
        )
    ).all()
    lost = [run_id for run_id in candidates if run_id not in present]
    if lost:
        session.execute(
            update(Run)
            .where(Run.id.in_(lost), Run.status == "queued")
            .values(enqueued_at=now)
            .execution_options(synchronize_session=False)
        )
    _commit_then_enqueue(session, lost, enqueue)
    return lost
