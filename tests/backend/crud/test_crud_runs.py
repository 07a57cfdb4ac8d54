"""crud.runs: the functions the API, the worker and the CLI share."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import update

from backend import broker
from backend.crud import runs as crud
from backend.db.models import Run
from backend.settings import Settings
from bnlab.core.errors import Conflict
from bnlab.core.schema.experiment import ExperimentConfig
from tests.utils.runs import create_random_run, make_config


def _dead_broker():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return broker.make_celery(Settings(BNLAB_BROKER_URL=f"redis://127.0.0.1:{port}/1"))


def test_create_run_broker_down_keeps_run_queued(session, monkeypatch):
    """With the broker unreachable the run is still stored `queued`, unstamped, for the
    reconciler."""
    monkeypatch.setattr(broker, "celery_app", _dead_broker())
    run = crud.create_run(session=session, config=ExperimentConfig.model_validate(make_config()))
    assert (run.status, run.enqueued_at) == ("queued", None)
    assert session.get(Run, run.id) is not None


def test_create_run_commits_before_enqueue(session, monkeypatch):
    """The run row exists (committed) when the message is sent (docs/design.md, "Commit, then
    enqueue")."""
    seen = []
    # No open session transaction at send time: the row was committed, not just flushed.
    monkeypatch.setattr(
        broker, "enqueue_run", lambda run_id: seen.append((run_id, session.in_transaction()))
    )
    run = crud.create_run(session=session, config=ExperimentConfig.model_validate(make_config()))
    assert seen == [(run.id, False)]


def test_request_cancel_claimed_meanwhile_only_flags(session):
    """A run a worker claimed after we read it as queued is flagged, not overwritten as
    cancelled."""
    run = create_random_run(session, status="queued")
    session.execute(
        update(Run)
        .where(Run.id == run.id)
        .values(status="running")
        .execution_options(synchronize_session=False)
    )
    out = crud.request_cancel(session=session, run=run)
    assert (out.status, out.cancel_requested) == ("running", True)


def test_request_cancel_ended_run_conflicts(session):
    """An ended run cannot be cancelled."""
    with pytest.raises(Conflict):
        crud.request_cancel(session=session, run=create_random_run(session, status="diverged"))


def test_retry_run_keeps_sweep(session):
    """A retried sweep cell stays in its sweep."""
    from backend.crud.sweeps import create_sweep
    from bnlab.core.schema.sweeps import SweepCreate

    sweep = create_sweep(
        session=session, sweep=SweepCreate(base=make_config(), seeds=[1]), enqueue=False
    )
    again = crud.retry_run(session=session, run=sweep.runs[0])
    assert again.sweep_id == sweep.id and again.id != sweep.runs[0].id


def test_read_runs_escapes_like_wildcards(session):
    """`%` and `_` in a text filter are literal characters, not wildcards."""
    a = create_random_run(session, config=make_config(name="100% sure"))
    create_random_run(session, config=make_config(name="100 sure"))
    runs, count = crud.read_runs(session=session, text="0% s")
    assert [r.id for r in runs] == [a.id] and count == 1
