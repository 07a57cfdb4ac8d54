"""A stalled run: its training thread stuck (a hung kernel, a deadlocked loader) while the
Heartbeat thread still beats. After BNLAB_STALL_TIMEOUT_S without progress the beats stop,
the run is given up, the worker's on_stall runs, and the reconciler requeues the run like a
dead worker's. Real PostgreSQL and SQLite databases."""

from __future__ import annotations

import threading
import time

from sqlalchemy.orm import sessionmaker

from backend.crud.lifecycle import requeue_stale_runs
from backend.db.models import Run
from tests.worker.test_db_sink import WORKER, claimed_run, record
from tests.worker.test_db_sink import sessions as sessions  # noqa: F401  (the fixture)
from worker.db_sink import DbSink, Heartbeat

BEAT, STALL = 0.1, 0.8


def heartbeat_at(sessions: sessionmaker, run_id: int):
    with sessions() as s:
        return s.get(Run, run_id).heartbeat_at


def test_stuck_training_stops_the_beats_and_gets_requeued(sessions) -> None:  # noqa: F811
    run_id = claimed_run(sessions)
    sink = DbSink(run_id=run_id, worker_id=WORKER, sessions=sessions)
    stalled = threading.Event()
    with Heartbeat(sink, BEAT, stall_timeout_s=STALL, on_stall=stalled.set) as hb:
        sink.on_probe(record(10))  # some progress, then nothing: the training thread hangs
        assert stalled.wait(STALL + 5), "on_stall was never called"
        frozen = heartbeat_at(sessions, run_id)
        time.sleep(5 * BEAT)
        assert heartbeat_at(sessions, run_id) == frozen, "a stalled run still beats"
        assert hb.stalled and sink.lost
    sink.on_probe(record(20))  # the thread wakes up: it writes nothing into a run it gave up
    with sessions() as s:
        assert s.get(Run, run_id).step == 10
    with sessions() as s:  # the reconciler's sweep, once the heartbeat is older than its timeout
        result = requeue_stale_runs(session=s, timeout_s=0.05, max_attempts=3)
    assert run_id in result["queued"], result
    with sessions() as s:
        assert s.get(Run, run_id).status == "queued"


def test_training_that_progresses_keeps_beating_past_the_stall_timeout(sessions) -> None:  # noqa: F811
    run_id = claimed_run(sessions)
    sink = DbSink(run_id=run_id, worker_id=WORKER, sessions=sessions)
    stalled = threading.Event()
    with Heartbeat(sink, BEAT, stall_timeout_s=STALL, on_stall=stalled.set):
        deadline = time.monotonic() + 3 * STALL
        step = 0
        while time.monotonic() < deadline:  # slow but alive: a probe every STALL / 4
            step += 5
            sink.on_probe(record(step))
            time.sleep(STALL / 4)
        before = heartbeat_at(sessions, run_id)
        time.sleep(3 * BEAT)
        assert heartbeat_at(sessions, run_id) > before
    assert not stalled.is_set() and not sink.lost
