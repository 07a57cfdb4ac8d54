"""DbSink: the engine's MetricSink that streams a run into the database.

Probe records are buffered and written in batches through `insert_points` (an idempotent
upsert, so a retried or repeated flush never duplicates a point). When the database is down
(a PostgreSQL restart mid-run) the buffer is kept: probes retry later without blocking
training, and epoch ends / the summary wait with backoff until the write lands, because the
engine checkpoints at epoch end and a point not stored by then could be lost for good.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from backend.crud.ingest import insert_points
from backend.crud.lifecycle import heartbeat
from backend.db.models import Run

log = logging.getLogger(__name__)
# The database is unreachable or restarting, or every pooled connection is busy past the
# pool's timeout (docs/operations.md): each is worth another try.
DB_ERRORS = (OperationalError, InterfaceError, PoolTimeout)
# Set when this worker process is asked to stop (SIGTERM: `bnlab serve` stopping, compose,
# systemd, Slurm; worker/tasks.py connects it to Celery's worker_shutting_down): the training
# loop stops at its next probe and the task gives the run back to the queue.
SHUTDOWN = threading.Event()

# The database's storage refuses writes (SQLite's messages; PostgreSQL's SQLSTATEs): retrying
# for minutes while training on cannot help, the worker stops and says so (worker/tasks.py).
_SQLITE_STORAGE = (
    "attempt to write a readonly database",
    "disk i/o error",
    "database or disk is full",
    "unable to open database file",
    "readonly database",
)
_PG_STORAGE = {
    "53100": "disk full",
    "53000": "insufficient resources",
    "58030": "I/O error",
    "25006": "read-only transaction",
}


def storage_failure(exc: BaseException) -> str | None:
    """Why the database cannot store anything (a read-only or immutable file, a full or failing
    disk), or None for any other error (a restart, a lost connection, a bad statement)."""
    orig = getattr(exc, "orig", exc)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code in _PG_STORAGE:
        return f"PostgreSQL: {_PG_STORAGE[code]}: {str(orig).strip().splitlines()[0]}"
    text = str(orig).strip().lower()
    if type(orig).__module__.startswith("sqlite3") and any(m in text for m in _SQLITE_STORAGE):
        return f"SQLite: {str(orig).strip().splitlines()[0]}"
    return None


def is_transient(exc: BaseException) -> bool:
    """A connection problem worth retrying (not a bad statement or a constraint violation, nor
    storage that refuses writes: see storage_failure)."""
    if storage_failure(exc) is not None:
        return False
    return isinstance(exc, DB_ERRORS) or (
        isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)
    )


class DbSink:
    """MetricSink writing to the runs / run_metrics / layer_stats tables of one claimed run."""

    def __init__(
        self,
        *,
        run_id: int,
        worker_id: str,
        sessions: sessionmaker[Session],
        flush_s: float = 0.0,
        max_buffer: int = 200,
        retry_s: float = 300.0,
    ) -> None:
        self.run_id, self.worker_id, self.sessions = run_id, worker_id, sessions
        # Seconds between two batched writes. 0 = every probe: the engine saves its epoch checkpoint
        # before calling on_epoch_end, so a record still buffered at a kill -9 right after the
        # checkpoint would never be re-emitted by the resumed run.
        self.flush_s = flush_s
        self.max_buffer = max_buffer  # records: flush early when the buffer grows this big
        self.retry_s = retry_s  # how long a blocking flush keeps retrying a down database
        self.buffer: list[Any] = []
        self.total_steps = 0
        self.last_step = 0
        self.lost = False  # True once the run is no longer ours: stop and write nothing more
        self.stopping = False  # True once training stopped because the worker shuts down
        self._cancel = False
        self._check_due = True  # read cancel_requested at most once per probe
        self._next_flush = 0.0
        self._backoff = 0.5
        self.flushes = 0  # successful batch writes
        # When training last showed progress (a probe, an epoch end, the start or the summary):
        # the Heartbeat's stall check reads it (settings.stall_timeout_s).
        self.progress_at = time.monotonic()

    # --- MetricSink protocol ------------------------------------------------------------
    def on_start(self, *, device: str, total_steps: int, layer_names: list[str]) -> None:
        self.progress_at = time.monotonic()
        self.total_steps = total_steps
        self.with_retry(self._write_run, device=device, layer_names=list(layer_names))

    def on_probe(self, record: Any) -> None:
        self.progress_at = time.monotonic()
        if self.lost:
            return
        # When the probe ran (UNIX seconds; the compare view's wall-time axis). Stamped here, not
        # by the engine, so its records stay identical between two runs of one seed; a resumed
        # run's points keep their real times.
        if "wall_time" not in record.metrics:
            record = dataclasses.replace(
                record, metrics={**record.metrics, "wall_time": time.time()}
            )
        self.buffer.append(record)
        self.total_steps = record.total_steps or self.total_steps
        self.last_step = max(self.last_step, record.step)
        self._check_due = True
        if time.monotonic() >= self._next_flush or len(self.buffer) >= self.max_buffer:
            self._try_flush()

    def on_epoch_end(self, *, epoch: int, step: int) -> None:
        self.progress_at = time.monotonic()
        self.last_step = max(self.last_step, step)
        self.flush()

    def on_summary(self, summary: dict[str, Any]) -> None:
        self.progress_at = time.monotonic()
        self.flush()

    def should_stop(self) -> bool:
        if self.lost or self._cancel or self.stopping:
            return True
        if SHUTDOWN.is_set():  # not a cancel: the task gives the run back (worker/tasks.py)
            self.stopping = True
            return True
        if not self._check_due:
            return False
        self._check_due = False
        try:
            with self.sessions() as s:
                row = s.execute(
                    select(Run.cancel_requested, Run.status, Run.claimed_by).where(
                        Run.id == self.run_id
                    )
                ).first()
        except DBAPIError as exc:  # database down: keep training, ask again at the next probe
            if not is_transient(exc):
                raise
            log.warning("run %s: cannot read cancel flag: %s", self.run_id, exc)
            return False
        if row is None or row.status != "running" or row.claimed_by != self.worker_id:
            self.lost = True
        self._cancel = bool(row and row.cancel_requested)
        return self.lost or self._cancel

    # --- writing ------------------------------------------------------------------------
    def flush(self) -> None:
        """Write everything buffered, retrying with backoff while the database is down."""
        if self.buffer and not self.lost:
            self.with_retry(self._flush_once)

    def _try_flush(self) -> None:
        try:
            self._flush_once()
            self._backoff = 0.5
            self._next_flush = time.monotonic() + self.flush_s
        except DBAPIError as exc:  # keep the buffer; try again later without stalling training
            if not is_transient(exc):
                raise
            log.warning(
                "run %s: flush failed, %d records kept: %s", self.run_id, len(self.buffer), exc
            )
            self._next_flush = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, 10.0)

    def _flush_once(self) -> None:
        batch = list(self.buffer)
        progress = min(1.0, self.last_step / self.total_steps) if self.total_steps else 0.0
        with self.sessions() as s, s.begin():
            # Ownership first: a worker that lost the run must not write into a new attempt.
            if not heartbeat(
                session=s,
                run_id=self.run_id,
                worker_id=self.worker_id,
                step=self.last_step,
                progress=progress,
            ):
                self.lost, self.buffer = True, []
                return
            insert_points(session=s, run_id=self.run_id, records=batch)
        del self.buffer[: len(batch)]
        self.flushes += 1

    def _write_run(self, **values: Any) -> None:
        with self.sessions() as s, s.begin():
            if not heartbeat(session=s, run_id=self.run_id, worker_id=self.worker_id, **values):
                self.lost = True

    def with_retry(self, fn, **kwargs: Any) -> None:
        retrying = retry(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential(multiplier=0.2, max=5.0),
            stop=stop_after_delay(self.retry_s),
            before_sleep=lambda state: log.warning(
                "run %s: database write failed (attempt %d), retrying: %s",
                self.run_id,
                state.attempt_number,
                state.outcome.exception() if state.outcome else None,
            ),
            reraise=True,
        )
        retrying(fn)(**kwargs)


class Heartbeat:
    """Touches the run's heartbeat from a thread, so long stretches without a probe (data
    loading, recalibration, export) never look like a dead worker.

    Stall check: a training thread stuck (a hung CUDA kernel, a deadlocked data loader) while
    this thread still beats would hold its run forever. After `stall_timeout_s` without
    progress (DbSink.progress_at) the beats stop and the run is given up here (sink.lost), so
    the reconciler finds its heartbeat stale like a dead worker's and requeues it; `on_stall`
    then runs (the Celery task exits the stuck process, and its supervisor starts a fresh one).
    """

    def __init__(
        self, sink: DbSink, interval_s: float, *, stall_timeout_s: float = 0.0, on_stall: Any = None
    ) -> None:
        self.sink, self.interval_s = sink, interval_s
        self.stall_timeout_s, self.on_stall = stall_timeout_s, on_stall
        self.stalled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"heartbeat-run-{sink.run_id}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            idle = time.monotonic() - self.sink.progress_at
            if self.stall_timeout_s and idle > self.stall_timeout_s:
                self.stalled, self.sink.lost = True, True
                log.error(
                    "run %s: no training progress for %.0fs (BNLAB_STALL_TIMEOUT_S=%g): "
                    "giving the run up so it is requeued",
                    self.sink.run_id,
                    idle,
                    self.stall_timeout_s,
                )
                if self.on_stall is not None:
                    self.on_stall()
                return
            try:
                with self.sink.sessions() as s, s.begin():
                    if not heartbeat(
                        session=s, run_id=self.sink.run_id, worker_id=self.sink.worker_id
                    ):
                        self.sink.lost = True
            except (DBAPIError, PoolTimeout) as exc:  # never kill the thread: next beat retries
                log.warning("run %s: heartbeat failed: %s", self.sink.run_id, exc)
