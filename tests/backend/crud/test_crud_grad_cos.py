"""grad_cos (probe.grad_noise, migration 0004): stored by ingest and read back by the metrics read,
on real PostgreSQL (binary COPY path) and SQLite, like every other run-level metric."""

from __future__ import annotations

import math

import pytest

from backend.crud.ingest import insert_points
from backend.crud.metrics import read_metrics
from bnlab.core.schema.records import ProbeRecord
from tests.utils.runs import add_bare_run


@pytest.fixture(params=["postgresql", "sqlite"])
def db(request, tmp_path):
    """PostgreSQL: the suite's savepoint session (rolled back); SQLite: a migrated file of its
    own."""
    if request.param == "postgresql":
        yield request.getfixturevalue("session")
        return
    from sqlalchemy.orm import Session

    from backend.db.migrate import upgrade
    from backend.db.session import make_engine

    url = f"sqlite:///{tmp_path / 'bnlab.db'}"
    upgrade(url)
    engine = make_engine(url)
    with Session(engine) as s:
        yield s
    engine.dispose()


def test_store_and_read_grad_cos(db):
    """A probe record's grad_cos comes back from read_metrics; records without it read as null."""
    run = add_bare_run(db)
    recs = [
        ProbeRecord(10, 20, {"val_acc": 0.5, "grad_cos": 0.25}),
        ProbeRecord(20, 20, {"val_acc": 0.6}),
    ]
    insert_points(session=db, run_id=run.id, records=recs)
    cols, n = read_metrics(session=db, run_id=run.id, keys=["grad_cos"])
    assert n == 2
    missing = cols["grad_cos"][1]
    assert list(cols["step"]) == [10, 20] and cols["grad_cos"][0] == pytest.approx(0.25)
    assert missing is None or math.isnan(missing)
