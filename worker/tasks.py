"""The one task: `bnlab.train_run(run_id)`, a thin adapter between the broker, the database
and the engine (docs/design.md, "Pass ids, assert the world"). It asserts the world itself: it
claims the run in the database first and returns without training when the claim fails, so a
doubled or redelivered message never trains a run twice at once."""

from __future__ import annotations

import faulthandler
import logging
import os
import socket
import traceback
from datetime import timedelta
from pathlib import Path

import torch
from celery.exceptions import Reject
from celery.signals import worker_shutting_down
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from backend.broker import TRAIN_RUN, celery_app, enqueue_run
from backend.crud.lifecycle import claim_run, finish_run, release_run
from backend.crud.metrics import pack_runs
from backend.db.models import Run, utcnow
from backend.db.session import get_sessionmaker
from backend.settings import settings
from bnlab.core.schema.experiment import ExperimentConfig

# Imported at worker start, not inside the task: importing torch takes seconds, and a claimed
# run must not go without heartbeats that long (the reconciler would think its worker dead).
from bnlab.engine.train import train
from worker.cluster import (
    ClusterSink,
    drop_checkpoint,
    exit_stalled_process,
    fetch_inputs,
    publish_exports,
)
from worker.db_sink import DB_ERRORS, SHUTDOWN, DbSink, Heartbeat, storage_failure
from worker.identity import WORKER_ID

log = logging.getLogger(__name__)
# A worker killed by a fatal signal (SIGBUS from a memory-mapped file that can no longer be
# written, SIGSEGV) prints every thread's Python stack to its log first: what it was doing.
faulthandler.enable()
# The exit status of a worker that stopped because the database cannot be written (EX_IOERR):
# its supervisor (`bnlab serve`) says so and stops, instead of restarting it into the same wall.
EXIT_STORAGE = os.EX_IOERR  # backend/supervisor.py knows it too


@worker_shutting_down.connect
def _on_shutting_down(**_kwargs: object) -> None:
    # Runs in the signal handler: only set a flag. The training loop reads it at its next probe.
    SHUTDOWN.set()


def _stop_on_storage_failure(run_id: int, exc: BaseException) -> None:
    """The database refuses writes: say what and where in one line and end this process
    (EXIT_STORAGE). The run keeps its last checkpoint and its row as it was; once the database
    is writable again the reconciler requeues it and it resumes from that checkpoint."""
    why = storage_failure(exc)
    if why is None:
        return
    log.critical(
        "run %s: cannot write %s (%s); stopping this worker. Make it writable (permissions, "
        "immutable flag, read-only mount, free space), then restart: the run resumes from its "
        "last checkpoint",
        run_id,
        settings.database_location,
        why,
    )
    logging.shutdown()
    os._exit(EXIT_STORAGE)


def _device_hint(device: str) -> str:
    """What the engine will pick (it reports the exact name in on_start)."""
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _claim(sessions, run_id: int) -> ExperimentConfig | str | None:
    """Claim the run; the validated config, an error text if it no longer validates, or None."""
    stale_before = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s)
    with sessions() as s, s.begin():
        run = s.get(Run, run_id)
        if run is None:
            return None
        try:
            cfg = ExperimentConfig.model_validate(run.config)
            device = _device_hint(cfg.train.device)
        except ValidationError as exc:
            cfg, device = f"invalid config: {exc}", None
        if not claim_run(
            session=s,
            run_id=run_id,
            worker_id=WORKER_ID,
            host=socket.gethostname(),
            device=device,
            stale_before=stale_before,
        ):
            return None
    return cfg


def _paths(run_id: int) -> dict[str, Path]:
    settings.checkpoints_dir.mkdir(parents=True, exist_ok=True)
    return dict(
        datasets_root=settings.datasets_dir,
        uploads_dir=settings.uploads_dir,
        checkpoint_path=settings.checkpoints_dir / f"run-{run_id}.pt",
        export_dir=settings.exports_dir / f"run-{run_id}",
    )


def _record(sink: DbSink, **kwargs: object) -> bool:
    """Write the final status with retries (the database may be restarting right now)."""
    done = []

    def write() -> None:
        with sink.sessions() as s, s.begin():
            done.append(finish_run(session=s, run_id=sink.run_id, worker_id=WORKER_ID, **kwargs))

    sink.with_retry(write)
    return bool(done and done[-1])


@celery_app.task(name=TRAIN_RUN)
def train_run(run_id: int) -> str:
    """Claim → engine.train → record the final status. Returns the status (or "skipped")."""
    if SHUTDOWN.is_set():  # received while stopping: back to the broker, never claimed
        raise Reject("worker stopping", requeue=True)
    sessions = get_sessionmaker()
    try:
        cfg = _claim(sessions, run_id)
    except DBAPIError as exc:
        _stop_on_storage_failure(run_id, exc)
        raise
    if cfg is None:
        log.info("run %s: not claimable (taken, finished or gone), skipping", run_id)
        return "skipped"
    paths = _paths(run_id)
    sink = ClusterSink(
        run_id=run_id,
        worker_id=WORKER_ID,
        sessions=sessions,
        checkpoint_path=paths["checkpoint_path"],
    )
    if isinstance(cfg, str):
        _record(sink, status="failed", error=cfg)
        return "failed"
    if SHUTDOWN.is_set():  # claimed while this worker was already asked to stop
        return _release(sink)
    try:
        with Heartbeat(
            sink,
            settings.heartbeat_s,
            stall_timeout_s=settings.stall_timeout_s,
            on_stall=exit_stalled_process,
        ):
            # Another host may have trained this run before: its checkpoint and an uploaded
            # dataset come from the artifact store (a no-op on the embedded default).
            fetch_inputs(cfg, run_id, paths)
            result = train(cfg, sink, **paths)
            if result.status == "succeeded" and not sink.lost:
                publish_exports(run_id, paths["export_dir"])  # before the status says so
        sink.flush()
    except DB_ERRORS as exc:
        _stop_on_storage_failure(run_id, exc)
        # The database stayed down longer than the sink retries. Leave the run `running` with
        # its checkpoint: it goes stale, and the reconciler requeues it to resume elsewhere.
        log.exception("run %s: database unavailable; leaving it to be requeued", run_id)
        return "unrecorded"
    except Exception as exc:  # any engine error ends the run failed with its text
        _stop_on_storage_failure(run_id, exc)
        log.exception("run %s failed", run_id)
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return _end(sink, paths, status="failed", error=text)
    if sink.lost:  # requeued or deleted while we trained: the new owner writes the end
        return "lost"
    if sink.stopping:  # this worker is shutting down: the run goes back to the queue
        return _release(sink)
    return _end(sink, paths, status=result.status, error=result.error, summary=result.summary)


def _release(sink: DbSink) -> str:
    """Give the run back without spending an attempt; it resumes from its last epoch checkpoint
    (kept) on the next worker. Commit, then enqueue; a message that cannot be sent now is
    re-sent by the reconciler (the run is queued with no message in the broker)."""
    released = []

    def write() -> None:
        with sink.sessions() as s:
            released.append(release_run(session=s, run_id=sink.run_id, worker_id=WORKER_ID))

    try:
        sink.with_retry(write)
    except DB_ERRORS:
        log.exception("run %s: could not give it back; it is requeued once stale", sink.run_id)
        return "unrecorded"
    if not released[-1]:
        return "lost"
    log.warning("run %s: worker stopping; run requeued, attempt not spent", sink.run_id)
    try:
        enqueue_run(sink.run_id, celery_app)
    except Exception:  # noqa: BLE001 - the reconciler re-sends a queued run's lost message
        log.warning("run %s: could not enqueue it again now", sink.run_id, exc_info=True)
    return "released"


def _end(sink: DbSink, paths: dict[str, Path], **final: object) -> str:
    try:
        owned = _record(sink, **final)
    except DB_ERRORS as exc:
        _stop_on_storage_failure(sink.run_id, exc)
        # Leave the checkpoint: the run is still `running`, goes stale and resumes elsewhere.
        log.exception("run %s: could not record final status", sink.run_id)
        return "unrecorded"
    if owned:
        drop_checkpoint(sink.run_id, paths["checkpoint_path"])
        _pack(sink)
    return str(final["status"]) if owned else "lost"


def _pack(sink: DbSink) -> None:
    """Pack the ended run's series now, so its first reader does not aggregate its rows.
    Best effort: the reconciler packs whatever this misses."""
    try:
        with sink.sessions() as s:
            run = s.get(Run, sink.run_id)
            if run is not None:
                pack_runs(session=s, runs=[run])
    except Exception:  # a cache write must never turn a finished run into a failed task
        log.warning("run %s: could not pack its series", sink.run_id, exc_info=True)


__all__ = ["train_run"]
