"""GET /api/events (server-sent events) against a real uvicorn server and committed rows:
the stream polls the database, so these tests commit (and delete) their runs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import delete, update

from backend.crud.runs import create_run
from backend.db.models import Run
from backend.db.session import get_sessionmaker
from bnlab.core.schema.experiment import ExperimentConfig
from tests.utils.runs import make_config


@pytest.fixture
def committed() -> Iterator[list[int]]:
    """Ids of runs the test commits; deleted afterwards."""
    ids: list[int] = []
    yield ids
    with get_sessionmaker()() as s:
        s.execute(delete(Run).where(Run.id.in_(ids)))
        s.commit()


def _new_run(ids: list[int]) -> int:
    with get_sessionmaker()() as s:
        run = create_run(
            session=s, config=ExperimentConfig.model_validate(make_config()), enqueue=False
        )
        ids.append(run.id)
        return run.id


def _set(run_id: int, **values) -> None:
    with get_sessionmaker()() as s:
        s.execute(update(Run).where(Run.id == run_id).values(**values))
        s.commit()


def _events(lines: Iterator[str], until, timeout: float = 8.0) -> list[tuple[str, dict]]:
    """Read events until `until(events)` is true (or fail after `timeout` seconds)."""
    events, kind, deadline = [], None, time.monotonic() + timeout
    for line in lines:
        if line.startswith("event:"):
            kind = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and kind in ("run", "probe"):
            events.append((kind, json.loads(line.split(":", 1)[1])))
            if until(events):
                return events
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"events so far: {events}")


def test_read_events_reports_status_and_probe_steps(server, committed):
    """A watched run's status change is a `run` event and its new probe step a `probe` event."""
    run_id = _new_run(committed)
    with httpx.stream("GET", f"{server}/api/events?runs={run_id}", timeout=10) as res:
        assert res.headers["content-type"].startswith("text/event-stream")
        lines = res.iter_lines()
        first = _events(lines, lambda ev: ev)
        assert first[0] == (
            "run",
            {
                "id": run_id,
                "status": "queued",
                "progress": 0.0,
                "step": 0,
                "attempt": 0,
                "error": None,
            },
        )
        _set(run_id, status="running", step=40, progress=0.25, attempt=1)
        got = _events(lines, lambda ev: {k for k, _ in ev} == {"run", "probe"})
    assert ("probe", {"run_id": run_id, "step": 40}) in got
    assert any(k == "run" and d["status"] == "running" and d["attempt"] == 1 for k, d in got)


def test_read_events_sees_new_and_finished_runs(server, committed):
    """Unfiltered, a run created after connecting and its end both arrive."""
    with httpx.stream("GET", f"{server}/api/events", timeout=10) as res:
        lines = res.iter_lines()
        time.sleep(1.5)  # the stream has taken its first look at the table
        run_id = _new_run(committed)
        _events(lines, lambda ev: any(d.get("id") == run_id for _, d in ev))
        _set(run_id, status="failed", error="boom")
        got = _events(
            lines, lambda ev: any(d.get("id") == run_id and d["status"] == "failed" for _, d in ev)
        )
    assert any(d.get("error") == "boom" for _, d in got)


def test_read_events_rejects_bad_filter(server):
    """?runs= must be a comma-separated list of ids (422)."""
    assert httpx.get(f"{server}/api/events?runs=1;drop", timeout=5).status_code == 422
