"""grad_cos (probe.grad_noise, migration 0004): stored by ingest and read back by the metrics read,
on real PostgreSQL (binary COPY path) and SQLite, like every other run-level metric."""

from __future__ import annotations

import math

import pytest

from backend.crud.ingest import insert_points
from backend.crud.metrics import read_metrics
from backend.db.models import Run
from tests.worker.procs import database_sessions


@pytest.fixture(params=["postgresql", "sqlite"])
def sessions(request, tmp_path):
    with database_sessions(request.param, tmp_path) as maker:
        yield maker


def test_store_and_read_grad_cos(sessions):
    """A probe record's grad_cos comes back from read_metrics; records without it read as null."""
    with sessions() as s, s.begin():
        run = Run(name="r", status="running", config={}, tags=[], progress=0.0, step=0,
                  attempt=1, cancel_requested=False)
        s.add(run)
        s.flush()
        run_id = run.id
    recs = [{"step": 10, "metrics": {"val_acc": 0.5, "grad_cos": 0.25}, "layers": []},
            {"step": 20, "metrics": {"val_acc": 0.6}, "layers": []}]
    with sessions() as s, s.begin():
        insert_points(session=s, run_id=run_id, records=recs)
    with sessions() as s:
        cols, n = read_metrics(session=s, run_id=run_id, keys=["grad_cos"])
    assert n == 2
    missing = cols["grad_cos"][1]
    assert list(cols["step"]) == [10, 20] and cols["grad_cos"][0] == pytest.approx(0.25)
    assert missing is None or math.isnan(missing)
