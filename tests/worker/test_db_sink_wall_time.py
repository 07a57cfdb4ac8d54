"""The worker stamps each probe's wall time as it receives it (run_metrics.wall_time, the
compare view's wall-time axis); the engine's own records carry none, so two runs of one seed
still emit identical records."""

from __future__ import annotations

import time

from sqlalchemy import select

from backend.db.models import RunMetric
from tests.worker.test_db_sink import WORKER, claimed_run, record, sessions  # noqa: F401
from worker.db_sink import DbSink


def test_stamp_wall_time_per_probe(sessions) -> None:  # noqa: F811
    run_id = claimed_run(sessions)
    sink = DbSink(run_id=run_id, worker_id=WORKER, sessions=sessions)
    before = time.time()
    first = record(10)
    sink.on_probe(first)
    time.sleep(0.05)
    sink.on_probe(record(20))
    sink.flush()
    after = time.time()
    assert "wall_time" not in first.metrics  # the engine's record is not changed
    with sessions() as s:
        rows = s.execute(
            select(RunMetric.step, RunMetric.wall_time)
            .where(RunMetric.run_id == run_id)
            .order_by(RunMetric.step)
        ).all()
    assert [r.step for r in rows] == [10, 20]
    assert before <= rows[0].wall_time < rows[1].wall_time <= after
    assert rows[1].wall_time - rows[0].wall_time >= 0.04
