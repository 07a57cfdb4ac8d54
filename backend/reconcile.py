"""The reconciler: repairs runs from what the database says, at API start-up and then every
`settings.reconcile_s` seconds (a daemon thread in the API process).

- stale heartbeat (worker killed, pre-empted, OOM) → queued again, or failed "worker lost"
- queued but its broker message is gone (Redis restarted empty) → enqueued again
- a script run (the SDK) whose client went silent past BNLAB_SCRIPT_TIMEOUT_S → crashed
- an ended run's series packed (crud/packs.py), so its first reader does not pay for it

One API process at a time reconciles (Leadership): with PostgreSQL the one holding a
session-level advisory lock; the others stand by and try to take it at every sweep, so when the
leader's process ends (crash, redeploy, its host gone) another takes over within a sweep or two.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from backend import broker
from backend.crud.lifecycle import reconcile_queued, requeue_stale_runs
from backend.crud.metrics import pack_ended_runs
from backend.crud.script_runs import crash_silent_runs
from backend.crud.workers import prune_workers
from backend.db.session import get_sessionmaker, make_engine
from backend.settings import Settings, settings

log = logging.getLogger(__name__)


def _run_id_of(raw: bytes | str) -> int | None:
    """The run id inside one serialized kombu message (protocol 2 body: [args, kwargs, embed])."""
    try:
        msg = json.loads(raw)
        if isinstance(msg, list):  # the Redis `unacked` hash stores [message, exchange, key]
            msg = msg[0]
        if msg.get("headers", {}).get("task") != broker.TRAIN_RUN:
            return None
        body = msg["body"]
        if msg.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return int(args[0])
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def _ids(raws: Iterable[bytes | str]) -> set[int]:
    return {i for i in map(_run_id_of, raws) if i is not None}


def _redis_ids(app: Celery) -> set[int]:
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        raws: list[Any] = []
        # The queue list (plus its priority sub-lists) and the reserved-but-unacked messages.
        for key in client.scan_iter(match=f"{broker.QUEUE}*"):
            if client.type(key) in (b"list", "list"):
                raws += client.lrange(key, 0, -1)
        raws += client.hvals("unacked")
        return _ids(raws)


def _filesystem_ids(folder: Path) -> set[int]:
    raws = []
    for path in folder.glob(f"*.{broker.QUEUE}.msg"):
        try:
            raws.append(path.read_bytes())
        except OSError:  # taken by a worker between glob and read
            continue
    return _ids(raws)


def broker_run_ids(app: Celery, s: Settings = settings) -> set[int] | None:
    """Run ids the broker still carries, or None when this transport cannot be inspected."""
    url = s.broker_url
    if url.startswith("filesystem"):
        return _filesystem_ids(s.broker_dir / "queue")
    if url.startswith(("redis", "rediss")):
        return _redis_ids(app)
    return None


def reconcile_once(app: Celery | None = None, s: Settings = settings) -> dict[str, list[int]]:
    """One pass: requeue stale runs, re-send lost messages, pack ended runs' series.
    Returns what it changed."""
    app = app or broker.celery_app

    def enqueue(run_id: int) -> None:
        broker.enqueue_run(run_id, app)

    sessions = get_sessionmaker(s.database_url)
    with sessions() as session:
        crashed = crash_silent_runs(session=session, timeout_s=s.script_timeout_s)
    with sessions() as session:
        out = requeue_stale_runs(
            session=session,
            timeout_s=s.heartbeat_timeout_s,
            max_attempts=s.max_attempts,
            enqueue=enqueue,
        )
    in_broker = broker_run_ids(app, s)
    with sessions() as session:
        # A message is in flight for at most a moment; wait two sweeps before calling it lost.
        out["resent"] = reconcile_queued(
            session=session,
            in_broker=in_broker,
            older_than_s=max(2 * s.reconcile_s, 2.0),
            enqueue=enqueue,
        )
    with sessions() as session, session.begin():
        prune_workers(session=session, older_than_s=max(3600.0, 10 * s.heartbeat_timeout_s))
    with sessions() as session:
        out["packed"] = pack_ended_runs(session=session)
    out["crashed"] = crashed
    if any(out.values()):
        log.info("reconciler: %s", out)
    return out


# The advisory lock's key (a bigint of the database's one lock space): "bnlab-rc" in ASCII.
LEADER_LOCK = int.from_bytes(b"bnlab-rc", "big") & (2**63 - 1)
# Server-side TCP keepalive of the lock's connection (seconds: idle, interval, probes): the
# server drops the session of a leader whose host vanished without closing it (power loss, a
# network partition) after about idle + interval * probes, and the lock with it; the OS default
# would keep it for two hours.
LOCK_KEEPALIVE = (20, 5, 3)
# Whether this session holds LEADER_LOCK (a bigint key is classid << 32 | objid, objsubid 1).
HOLDS_LOCK = text(
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND pid = pg_backend_pid() AND objsubid = 1"
    " AND ((classid::bigint << 32) | objid::bigint) = :key)"
)


class Leadership:
    """Whether this process is the one that reconciles.

    PostgreSQL: a session-level advisory lock (pg_try_advisory_lock) taken on a connection of
    its own, outside the request pool. The lock lives as long as that session, so it needs no
    renewal and cannot outlive its holder: the process ending closes the connection and frees
    it. A standby keeps its connection and tries again at every sweep. A leader checks its
    session at every sweep; a broken one (the database restarted) means the lock is gone, and
    it competes again like a standby. SQLite: one process serves the file, so it always leads.
    """

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.sqlite = database_url.startswith("sqlite")
        self.conn: Connection | None = None
        self.leading = False

    def check(self) -> bool:
        """True when this process leads now (taking the lock if it is free)."""
        if self.sqlite:
            return True
        try:
            if self.conn is None:
                self.conn = make_engine(self.url, pooled=False).connect()
                idle, interval, count = LOCK_KEEPALIVE
                self.conn.execute(
                    text(
                        f"SET tcp_keepalives_idle = {idle}; "
                        f"SET tcp_keepalives_interval = {interval}; "
                        f"SET tcp_keepalives_count = {count}"
                    )
                )
            if self.leading:
                # Still ours? (A SQLAlchemy connection may have silently reconnected.)
                self.leading = bool(self.conn.execute(HOLDS_LOCK, {"key": LEADER_LOCK}).scalar())
                if not self.leading:
                    log.warning("reconciler: the leader lock is gone; competing again")
            if not self.leading:
                got = self.conn.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": LEADER_LOCK}
                ).scalar()
                if got:
                    self.leading = True
                    log.info("reconciler: this process leads (advisory lock %d)", LEADER_LOCK)
        except SQLAlchemyError as exc:  # the database is away: whatever we held is gone
            if self.leading:
                log.warning("reconciler: lost the leader lock (%s); competing again", exc)
            self._close()
        return self.leading

    def release(self) -> None:
        """Hand the lead over now (API shutdown): closing the session frees the lock."""
        if self.leading:
            log.info("reconciler: giving up the lead")
        self._close()

    def _close(self) -> None:
        self.leading = False
        if self.conn is not None:
            try:
                self.conn.close()
            except SQLAlchemyError:
                pass
            self.conn = None


def _loop(stop: threading.Event, app: Celery | None, s: Settings) -> None:
    leader = Leadership(s.database_url)
    try:
        while True:
            try:
                if leader.check():
                    reconcile_once(app, s)
            except Exception as exc:  # database or broker down: the next sweep tries again
                log.warning("reconciler pass failed: %s", exc)
            if stop.wait(s.reconcile_s):
                return
    finally:
        leader.release()


def start_background(app: Any = None, s: Settings = settings) -> threading.Event:
    """Start the reconciler thread (first pass right away); set the returned event to stop it.
    `app` is the FastAPI app: the event is kept on its state so shutdown can stop it."""
    stop = threading.Event()
    thread = threading.Thread(
        target=_loop, args=(stop, None, s), name="bnlab-reconciler", daemon=True
    )
    thread.start()
    if app is not None and hasattr(app, "state"):
        app.state.reconciler_stop = stop
    return stop


def stop_background(app: Any) -> None:
    """Stop the thread started by start_background(app) (API shutdown)."""
    stop = getattr(getattr(app, "state", None), "reconciler_stop", None)
    if stop is not None:
        stop.set()
