"""The reconciler: repairs runs from what the database says, at API start-up and then every
`settings.reconcile_s` seconds (a daemon thread in the API process).

- stale heartbeat (worker killed, pre-empted, OOM) → queued again, or failed "worker lost"
- queued but its broker message is gone (Redis restarted empty) → enqueued again
- a script run (the SDK) whose client went silent past BNLAB_SCRIPT_TIMEOUT_S → crashed
- an ended run's series packed (crud/packs.py), so its first reader does not pay for it
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

from backend import broker
from backend.crud.lifecycle import reconcile_queued, requeue_stale_runs
from backend.crud.metrics import pack_ended_runs
from backend.crud.script_runs import crash_silent_runs
from backend.crud.workers import prune_workers
from backend.db.session import get_sessionmaker
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


def _loop(stop: threading.Event, app: Celery | None, s: Settings) -> None:
    while True:
        try:
            reconcile_once(app, s)
        except Exception as exc:  # database or broker down: the next sweep tries again
            log.warning("reconciler pass failed: %s", exc)
        if stop.wait(s.reconcile_s):
            return


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
