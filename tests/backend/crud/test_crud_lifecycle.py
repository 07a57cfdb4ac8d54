"""Run lifecycle transitions and worker liveness on real PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import timedelta

import pytest

from backend.crud.lifecycle import (
    WORKER_LOST,
    claim_run,
    finish_run,
    heartbeat,
    reconcile_queued,
    release_run,
    release_runs_of_workers,
    requeue_stale_runs,
)
from backend.crud.workers import live_workers, register_worker
from backend.db.models import Run, Worker, utcnow
from tests.utils.runs import add_bare_run
from tests.worker.procs import database_sessions


@pytest.fixture(params=["postgresql", "sqlite"])
def sessions(request, tmp_path):
    with database_sessions(request.param, tmp_path) as maker:
        yield maker


def new_run(sessions, **values) -> int:
    with sessions() as s, s.begin():
        return add_bare_run(s, **({"status": "queued", "attempt": 0} | values)).id


def claim(sessions, run_id: int, worker: str, timeout_s: float = 30) -> bool:
    with sessions() as s, s.begin():
        return claim_run(
            session=s,
            run_id=run_id,
            worker_id=worker,
            host="h",
            device="cpu",
            stale_before=utcnow() - timedelta(seconds=timeout_s),
        )


def get(sessions, run_id: int) -> Run:
    with sessions() as s:
        return s.get(Run, run_id)


def test_claim_queued_run_once(sessions) -> None:
    """Two workers claiming one queued run: exactly one wins, and attempt becomes 1."""
    run_id = new_run(sessions)
    assert (claim(sessions, run_id, "a"), claim(sessions, run_id, "b")) == (True, False)
    run = get(sessions, run_id)
    assert (run.status, run.claimed_by, run.attempt) == ("running", "a", 1)


def test_claim_running_run_when_heartbeat_stale(sessions) -> None:
    """A running run whose heartbeat is older than the timeout can be taken over (attempt 2)."""
    run_id = new_run(
        sessions,
        status="running",
        claimed_by="dead",
        attempt=1,
        heartbeat_at=utcnow() - timedelta(seconds=60),
    )
    assert claim(sessions, run_id, "b", timeout_s=30)
    assert get(sessions, run_id).attempt == 2


def test_refuse_claim_when_run_cancel_requested(sessions) -> None:
    """A run flagged for cancel is never started."""
    run_id = new_run(sessions, cancel_requested=True)
    assert not claim(sessions, run_id, "a")


def test_store_diverged_summary_with_nan_as_null(sessions) -> None:
    """A diverged run's summary holds NaN; it is stored (as null), not lost to a JSON error."""
    run_id = new_run(sessions)
    claim(sessions, run_id, "a")
    with sessions() as s, s.begin():
        assert finish_run(
            session=s,
            run_id=run_id,
            worker_id="a",
            status="diverged",
            summary={"test_acc_eval": float("nan"), "steps": 7},
            error="loss is nan",
        )
    run = get(sessions, run_id)
    assert (run.status, run.summary) == ("diverged", {"test_acc_eval": None, "steps": 7})


def test_refuse_finish_when_worker_lost_the_run(sessions) -> None:
    """A worker whose run was requeued cannot record a final status over the new attempt."""
    run_id = new_run(sessions)
    claim(sessions, run_id, "a")
    with sessions() as s, s.begin():
        s.get(Run, run_id).claimed_by = "b"
    with sessions() as s, s.begin():
        assert not finish_run(session=s, run_id=run_id, worker_id="a", status="succeeded")
        assert not heartbeat(session=s, run_id=run_id, worker_id="a")
    assert get(sessions, run_id).status == "running"


def test_requeue_stale_run_and_enqueue_after_commit(sessions) -> None:
    """A stale running run goes back to `queued` and is enqueued, after the commit."""
    run_id = new_run(
        sessions,
        status="running",
        claimed_by="dead",
        attempt=1,
        heartbeat_at=utcnow() - timedelta(seconds=60),
    )
    seen: list[str] = []

    def enqueue(i: int) -> None:
        seen.append(get(sessions, i).status)

    with sessions() as s:
        out = requeue_stale_runs(session=s, timeout_s=30, max_attempts=3, enqueue=enqueue)
    assert out["queued"] == [run_id] and seen == ["queued"]


def test_fail_stale_run_after_max_attempts(sessions) -> None:
    """A stale run on its last attempt ends `failed` with "worker lost", not queued."""
    run_id = new_run(
        sessions,
        status="running",
        claimed_by="dead",
        attempt=3,
        heartbeat_at=utcnow() - timedelta(seconds=60),
    )
    with sessions() as s:
        requeue_stale_runs(session=s, timeout_s=30, max_attempts=3)
    run = get(sessions, run_id)
    assert (run.status, run.error) == ("failed", WORKER_LOST)


def test_cancel_stale_run_when_cancel_was_requested(sessions) -> None:
    """A stale run whose cancel was asked ends `cancelled` rather than training again."""
    run_id = new_run(
        sessions,
        status="running",
        claimed_by="dead",
        attempt=1,
        cancel_requested=True,
        heartbeat_at=utcnow() - timedelta(seconds=60),
    )
    with sessions() as s:
        requeue_stale_runs(session=s, timeout_s=30, max_attempts=3)
    assert get(sessions, run_id).status == "cancelled"


def test_keep_running_run_with_fresh_heartbeat(sessions) -> None:
    """A run that heartbeats is left alone by the reaper."""
    run_id = new_run(sessions, status="running", claimed_by="a", attempt=1, heartbeat_at=utcnow())
    with sessions() as s:
        out = requeue_stale_runs(session=s, timeout_s=30, max_attempts=3)
    assert out["queued"] == [] and get(sessions, run_id).status == "running"


def test_resend_only_queued_runs_missing_from_broker(sessions) -> None:
    """reconcile_queued re-enqueues old queued runs the broker does not hold, and only those."""
    old = utcnow() - timedelta(seconds=120)
    lost = new_run(sessions, enqueued_at=old)
    held = new_run(sessions, enqueued_at=old)
    fresh = new_run(sessions, enqueued_at=utcnow())
    sent: list[int] = []
    with sessions() as s:
        out = reconcile_queued(session=s, in_broker={held}, older_than_s=30, enqueue=sent.append)
    assert out == sent == [lost] and fresh not in sent


def test_resend_nothing_when_broker_cannot_be_inspected(sessions) -> None:
    """With an opaque broker (in_broker None) nothing is resent blindly."""
    new_run(sessions, enqueued_at=utcnow() - timedelta(seconds=120))
    with sessions() as s:
        assert reconcile_queued(session=s, in_broker=None, older_than_s=30) == []


def test_list_only_recently_seen_workers(sessions) -> None:
    """live_workers reports workers seen within the timeout, not long-silent ones."""
    with sessions() as s, s.begin():
        register_worker(session=s, worker_id="alive", host="h", pid=1)
        s.add(Worker(id="gone", host="h", pid=2, last_seen=utcnow() - timedelta(seconds=600)))
    with sessions() as s:
        assert [w.id for w in live_workers(s, timeout_s=30)] == ["alive"]


def test_resend_run_never_sent_once_old_enough(sessions) -> None:
    """A run stored while the broker was down (no enqueued_at) is sent once it is older than
    the threshold, and not while its submit may still be sending it."""
    stale = new_run(sessions, created_at=utcnow() - timedelta(seconds=120))
    new_run(sessions)  # just created: its submit may be sending it right now
    with sessions() as s:
        assert reconcile_queued(session=s, in_broker=set(), older_than_s=30) == [stale]


# ---------------------------------------------------------------- a stopping worker's runs


def test_release_gives_the_attempt_back(sessions) -> None:
    """A worker being stopped gives its run back: queued, unclaimed, the attempt of its claim
    not spent (a second claim is attempt 1 again), and only the holder can do it."""
    run_id = new_run(sessions)
    assert claim(sessions, run_id, "host:11:aa")
    with sessions() as s:
        assert not release_run(session=s, run_id=run_id, worker_id="host:12:bb")
        assert release_run(session=s, run_id=run_id, worker_id="host:11:aa")
    run = get(sessions, run_id)
    assert (run.status, run.claimed_by, run.attempt) == ("queued", None, 0)
    assert run.enqueued_at is not None
    assert claim(sessions, run_id, "host:13:cc") and get(sessions, run_id).attempt == 1


def test_release_runs_of_stopped_workers_by_pid(sessions) -> None:
    """After the grace, the supervisor gives back what its killed workers (host:pid:) still
    hold; a cancel pending on one ends it cancelled; other hosts' and pids' runs stay."""
    mine, cancelled, other_pid, other_host = (new_run(sessions) for _ in range(4))
    for run_id, worker in (
        (mine, "h:7:a1"),
        (cancelled, "h:7:a1"),
        (other_pid, "h:71:b2"),
        (other_host, "g:7:c3"),
    ):
        assert claim(sessions, run_id, worker)
    with sessions() as s, s.begin():
        s.get(Run, cancelled).cancel_requested = True
    with sessions() as s:
        assert release_runs_of_workers(session=s, worker_prefixes=["h:7:"]) == [mine]
    assert (get(sessions, mine).status, get(sessions, mine).attempt) == ("queued", 0)
    assert get(sessions, cancelled).status == "cancelled"
    assert get(sessions, other_pid).status == get(sessions, other_host).status == "running"
