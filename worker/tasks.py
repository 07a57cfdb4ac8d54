"""The one task: `bnlab.train_run(run_id)`, a thin adapter between the broker, the database
and the engine (docs/design.md, "Pass ids, assert the world"). It asserts the world itself: it
claims the run in the database first and returns without training when the claim fails, so a
doubled or redelivered message never trains a run twice at once."""

from __future__ import annotations

import logging
import socket
import traceback
from datetime import timedelta
from pathlib import Path

import torch
from pydantic import ValidationError

from backend.broker import TRAIN_RUN, celery_app
from backend.crud.lifecycle import claim_run, finish_run
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
from worker.db_sink import DB_ERRORS, DbSink, Heartbeat
from worker.identity import WORKER_ID

log = logging.getLogger(__name__)


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
    sessions = get_sessionmaker()
    cfg = _claim(sessions, run_id)
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
    except DB_ERRORS:
        # The database stayed down longer than the sink retries. Leave the run `running` with
        # its checkpoint: it goes stale, and the reconciler requeues it to resume elsewhere.
        log.exception("run %s: database unavailable; leaving it to be requeued", run_id)
        return "unrecorded"
    except Exception as exc:  # any engine error ends the run failed with its text
        log.exception("run %s failed", run_id)
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return _end(sink, paths, status="failed", error=text)
    if sink.lost:  # requeued or deleted while we trained: the new owner writes the end
        return "lost"
    return _end(sink, paths, status=result.status, error=result.error, summary=result.summary)


def _end(sink: DbSink, paths: dict[str, Path], **final: object) -> str:
    try:
        owned = _record(sink, **final)
    except DB_ERRORS:
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
