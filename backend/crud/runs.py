"""Runs: submit, read, list, cancel, retry, delete. Status changes made by the API live here;
the worker's claim/heartbeat/finish transitions live with the worker's crud.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from backend import broker
from backend.artifacts import get_store
from backend.crud import run_list
from backend.crud.checks import check_submission
from backend.db.models import TERMINAL_STATUSES, LayerStat, Run, RunMetric, utcnow
from backend.settings import settings
from bnlab.core.errors import Conflict, NotFound
from bnlab.core.schema.experiment import ExperimentConfig

log = logging.getLogger(__name__)


def send_run(*, session: Session, run: Run) -> bool:
    """Enqueue a committed run and stamp `enqueued_at`; False if the broker is unreachable
    (the run stays `queued` with no stamp and the reconciler sends it later)."""
    try:
        broker.enqueue_run(run.id)
    # Any broker failure: the database row is the truth, not the message.
    except Exception as exc:  # noqa: BLE001
        log.warning(
            "could not enqueue run %s (%s); the reconciler will retry", run.id, type(exc).__name__
        )
        return False
    run.enqueued_at = utcnow()
    session.commit()
    return True


def new_run(*, config: ExperimentConfig, sweep_id: int | None = None) -> Run:
    """An unsaved `queued` Run row for `config` (checked by the caller)."""
    return Run(
        name=config.name,
        status="queued",
        config=config.model_dump(mode="json"),
        tags=list(config.tags),
        sweep_id=sweep_id,
        progress=0.0,
        step=0,
        attempt=0,
        cancel_requested=False,
    )


def create_run(
    *, session: Session, config: ExperimentConfig, sweep_id: int | None = None, enqueue: bool = True
) -> Run:
    """Check, store and (after the commit: docs/design.md, "Commit, then enqueue") enqueue a run."""
    check_submission(session=session, config=config)
    run = new_run(config=config, sweep_id=sweep_id)
    session.add(run)
    session.commit()
    if enqueue:
        send_run(session=session, run=run)
    return run


def get_run(*, session: Session, run_id: int) -> Run:
    """The run, or NotFound."""
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    return run


def get_runs(*, session: Session, run_ids: Sequence[int]) -> list[Run]:
    """The runs among `run_ids` that exist, in the order asked (one query)."""
    found = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(list(run_ids))))}
    return [found[i] for i in run_ids if i in found]


def read_runs(
    *,
    session: Session,
    status: Sequence[str] | None = None,
    sweep_id: int | None = None,
    tag: str | None = None,
    text: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[Run], int]:
    """A page of runs (newest first) matching every given filter, and the total count (the
    table's sorts and search: crud/run_list.py)."""
    where = run_list.filters(status=status, sweep_id=sweep_id, tag=tag, text=text)
    return run_list.read_page(
        session=session, where=where, sort=run_list.parse_sort(None), offset=offset, limit=limit
    )


def request_cancel(*, session: Session, run: Run) -> Run:
    """Queued: cancelled now. Running: flagged; the worker stops at its next probe."""
    if run.status in TERMINAL_STATUSES:
        raise Conflict(f"run {run.id} already ended ({run.status})")
    # Conditional updates: a worker may claim or finish the run between our read and write.
    session.execute(
        update(Run)
        .where(Run.id == run.id, Run.status == "queued")
        .values(status="cancelled", finished_at=utcnow(), cancel_requested=True)
    )
    session.execute(
        update(Run).where(Run.id == run.id, Run.status == "running").values(cancel_requested=True)
    )
    session.commit()
    session.refresh(run)
    return run


def retry_run(*, session: Session, run: Run) -> Run:
    """A new run with the same config (checked again: the caps may have changed)."""
    if run.kind == "script":
        raise Conflict(f"run {run.id} came from a user's script; run the script again to retry it")
    config = ExperimentConfig.model_validate(run.config)
    return create_run(session=session, config=config, sweep_id=run.sweep_id)


def delete_run(*, session: Session, run: Run) -> None:
    """Remove an ended run, its series and its export files."""
    if run.status not in TERMINAL_STATUSES:
        raise Conflict(f"run {run.id} is {run.status}; cancel it before deleting")
    run_id = run.id
    session.execute(delete(LayerStat).where(LayerStat.run_id == run_id))
    session.execute(delete(RunMetric).where(RunMetric.run_id == run_id))
    session.delete(run)
    session.commit()
    # Files go only after the rows are gone, so a failed commit never leaves a run without them.
    shutil.rmtree(settings.exports_dir / f"run-{run_id}", ignore_errors=True)
    try:  # and the copies a remote worker published to the object store
        get_store().delete_prefix(f"exports/run-{run_id}/")
    except Exception:  # noqa: BLE001 - a leftover object costs space; the run is gone already
        log.warning("run %s: could not delete its stored exports", run_id, exc_info=True)
