"""insert_points: batched, idempotent upserts on real PostgreSQL (COPY path) and SQLite."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import func, select

from backend.crud.ingest import insert_points
from backend.db.models import LayerStat, RunMetric
from bnlab.core.schema.records import ProbeRecord
from tests.utils.runs import add_bare_run
from tests.worker.procs import database_sessions


@pytest.fixture(params=["postgresql", "sqlite"])
def sessions(request, tmp_path):
    with database_sessions(request.param, tmp_path) as maker:
        yield maker


def run_id_in(sessions) -> int:
    with sessions() as s, s.begin():
        return add_bare_run(s).id


def records(steps, n_layers=3, shift=0.5):
    return [
        ProbeRecord(
            st,
            100,
            {"val_acc": 0.5, "train_loss": 1.0},
            [
                {"index": i, "name": f"l{i}", "shift": shift, "train_var": 1.0}
                for i in range(n_layers)
            ],
        )
        for st in steps
    ]


def counts(sessions, run_id):
    with sessions() as s:
        return (
            s.scalar(select(func.count()).where(RunMetric.run_id == run_id)),
            s.scalar(select(func.count()).where(LayerStat.run_id == run_id)),
        )


def test_store_each_point_once_when_inserted_twice(sessions) -> None:
    """The same records written twice leave one row per (run, step) and (run, layer, step)."""
    run_id = run_id_in(sessions)
    for _ in range(2):
        with sessions() as s, s.begin():
            insert_points(session=s, run_id=run_id, records=records(range(0, 100, 10)))
    assert counts(sessions, run_id) == (10, 30)


def test_keep_last_value_when_step_repeats_in_one_batch(sessions) -> None:
    """A batch holding one step twice stores the later values (no conflict error)."""
    run_id = run_id_in(sessions)
    batch = records([5], shift=0.1) + records([5], shift=0.9)
    with sessions() as s, s.begin():
        insert_points(session=s, run_id=run_id, records=batch)
    with sessions() as s:
        assert (
            s.scalars(select(LayerStat.shift).where(LayerStat.run_id == run_id)).all() == [0.9] * 3
        )


def test_store_non_finite_values_without_error(sessions) -> None:
    """inf (a diverging layer) is stored, not refused; missing keys are NULL."""
    run_id = run_id_in(sessions)
    with sessions() as s, s.begin():
        insert_points(session=s, run_id=run_id, records=records([1], shift=math.inf))
    with sessions() as s:
        row = s.scalars(select(LayerStat).where(LayerStat.run_id == run_id)).first()
        assert (row.shift, row.eval_var) == (math.inf, None)


def test_store_numpy_scalars_as_floats(sessions) -> None:
    """NumPy scalars (float32 from a GPU tensor) are stored as numbers on both databases."""
    import numpy as np

    run_id = run_id_in(sessions)
    batch = [
        ProbeRecord(
            1,
            1,
            {"val_acc": np.float32(0.25)},
            [{"index": 0, "shift": np.float32(1.5), "train_var": np.float64(2.0)}],
        )
    ]
    with sessions() as s, s.begin():
        insert_points(session=s, run_id=run_id, records=batch)
    with sessions() as s:
        row = s.scalars(select(LayerStat).where(LayerStat.run_id == run_id)).one()
        acc = s.scalar(select(RunMetric.val_acc).where(RunMetric.run_id == run_id))
        assert (row.shift, row.train_var, acc) == (1.5, 2.0, 0.25)


def test_store_each_point_once_when_batch_overlaps_stored_steps(sessions) -> None:
    """A resumed run re-sends steps it stored before along with new ones: old steps are
    overwritten, new ones added, none doubled (the append fast path must not be taken)."""
    run_id = run_id_in(sessions)
    with sessions() as s, s.begin():
        insert_points(session=s, run_id=run_id, records=records(range(0, 50, 10)))
    with sessions() as s, s.begin():
        insert_points(session=s, run_id=run_id, records=records(range(30, 80, 10), shift=0.7))
    assert counts(sessions, run_id) == (8, 24)
    with sessions() as s:
        shifts = s.scalars(
            select(LayerStat.shift).where(LayerStat.run_id == run_id, LayerStat.step >= 30)
        ).all()
        assert shifts == [0.7] * 15
