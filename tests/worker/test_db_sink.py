"""DbSink against real databases (a scratch PostgreSQL database and a SQLite file)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import sessionmaker

from backend.crud.lifecycle import claim_run
from backend.db.migrate import upgrade
from backend.db.models import LayerStat, Run, RunMetric, utcnow
from backend.db.session import make_engine
from bnlab.engine.sinks import ProbeRecord
from tests.utils.runs import add_bare_run
from tests.worker.procs import free_port, scratch_pg_database
from worker.db_sink import DbSink, is_transient, storage_failure

WORKER = "test-host:1:abc"


@pytest.fixture(params=["postgresql", "sqlite"])
def sessions(request, tmp_path: Path) -> Iterator[sessionmaker]:
    """A sessionmaker on a migrated database of each kind."""
    if request.param == "postgresql":
        with scratch_pg_database() as url:
            engine = make_engine(url)
            yield sessionmaker(bind=engine, expire_on_commit=False)
            engine.dispose()
    else:
        url = f"sqlite:///{tmp_path / 'sink.db'}"
        upgrade(url)
        engine = make_engine(url)
        yield sessionmaker(bind=engine, expire_on_commit=False)
        engine.dispose()


def claimed_run(sessions: sessionmaker, worker_id: str = WORKER) -> int:
    """A run in the database, claimed by `worker_id` as the task would."""
    with sessions() as s, s.begin():
        run_id = add_bare_run(s, status="queued", attempt=0).id
    with sessions() as s, s.begin():
        assert claim_run(
            session=s,
            run_id=run_id,
            worker_id=worker_id,
            host="h",
            device="cpu",
            stale_before=utcnow(),
        )
    return run_id


def record(step: int, n_layers: int = 2, total: int = 100) -> ProbeRecord:
    layers = [
        {
            "index": i,
            "name": f"blocks.{i}.bn",
            "train_var": 1.0 + step,
            "shift": 0.5 * i,
            "running_var": 1.0,
            "eval_var": 2.0,
            "grad_norm": 0.1,
        }
        for i in range(n_layers)
    ]
    return ProbeRecord(
        step=step,
        total_steps=total,
        metrics={"epoch": step / 10, "train_loss": 1.0 / step, "val_acc": 0.5},
        layers=layers,
    )


def counts(sessions: sessionmaker, run_id: int) -> tuple[int, int]:
    with sessions() as s:
        return (
            s.scalar(select(func.count()).where(RunMetric.run_id == run_id)),
            s.scalar(select(func.count()).where(LayerStat.run_id == run_id)),
        )


def test_store_each_point_once_when_flush_repeated(sessions) -> None:
    """Flushing the same records twice (a retried flush, a resumed run) stores each point once."""
    run_id = claimed_run(sessions)
    sink = DbSink(run_id=run_id, worker_id=WORKER, sessions=sessions)
    for step in (10, 20, 30):
        sink.on_probe(record(step))
    sink.buffer = [record(s) for s in (10, 20, 30)]  # the same batch again
    sink.flush()
    assert counts(sessions, run_id) == (3, 6)


def test_overwrite_point_when_step_written_again(sessions) -> None:
    """A re-emitted step replaces the stored values (upsert), it does not add a row."""
    run_id = claimed_run(sessions)
    sink = DbSink(run_id=run_id, worker_id=WORKER, sessions=sessions)
    sink.on_probe(record(10))
    newer = record(10)
    newer.metrics["val_acc"] = 0.9
    sink.on_probe(newer)
    with sessions() as s:
        assert s.scalar(select(RunMetric.val_acc).where(RunMetric.run_id == run_id)) == 0.9


def test_write_device_and_layer_names_on_start(sessions) -> None:
    """on_start records the engine's device name and the BN layer names on the run."""
    run_id = claimed_run(sessions)
    DbSink(run_id=run_id, worker_id=WORKER, sessions=sessions).on_start(
        device="cpu (test)", total_steps=100, layer_names=["blocks.0.bn", "blocks.1.bn"]
    )
    with sessions() as s:
        run = s.get(Run, run_id)
        assert (run.device, run.layer_names) == ("cpu (test)", ["blocks.0.bn", "blocks.1.bn"])


def test_update_progress_and_step_on_probe(sessions) -> None:
    """Each flush moves the run's step and progress (step / total_steps) forward."""
    run_id = claimed_run(sessions)
    sink = DbSink(run_id=run_id, worker_id=WORKER, sessions=sessions)
    sink.on_start(device="cpu", total_steps=200, layer_names=["a", "b"])
    sink.on_probe(record(50, total=200))
    with sessions() as s:
        run = s.get(Run, run_id)
        assert (run.step, run.progress) == (50, 0.25)


def test_keep_buffer_when_database_unreachable(sessions) -> None:
    """A flush that cannot connect keeps every record and writes them all once it can."""
    run_id = claimed_run(sessions)
    down = make_engine(
        f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere?connect_timeout=2"
    )
    sink = DbSink(run_id=run_id, worker_id=WORKER, sessions=sessionmaker(bind=down))
    for step in (10, 20):
        sink.on_probe(record(step))
        sink._next_flush = 0.0  # skip the backoff wait: retry at the next probe
    assert len(sink.buffer) == 2 and counts(sessions, run_id) == (0, 0)
    sink.sessions = sessions  # the database is back
    sink.on_probe(record(30))
    assert sink.buffer == [] and counts(sessions, run_id) == (3, 6)


def test_stop_when_cancel_requested(sessions) -> None:
    """should_stop turns True at the first probe after cancel_requested is set."""
    run_id = claimed_run(sessions)
    sink = DbSink(run_id=run_id, worker_id=WORKER, sessions=sessions)
    sink.on_probe(record(10))
    assert sink.should_stop() is False
    with sessions() as s, s.begin():
        s.get(Run, run_id).cancel_requested = True
    sink.on_probe(record(20))
    assert sink.should_stop() is True


def test_read_cancel_flag_at_most_once_per_probe(sessions) -> None:
    """Between two probes, should_stop answers from memory (no query per training step)."""
    run_id = claimed_run(sessions)
    sink = DbSink(run_id=run_id, worker_id=WORKER, sessions=sessions)
    sink.on_probe(record(10))
    selects: list[str] = []
    engine = sessions.kw["bind"]

    def listen(*a, **k) -> None:
        if a[2].lstrip().upper().startswith("SELECT"):  # the statement text
            selects.append(a[2])

    event.listen(engine, "before_cursor_execute", listen)
    try:
        for _ in range(50):
            sink.should_stop()
    finally:
        event.remove(engine, "before_cursor_execute", listen)
    assert len(selects) == 1, selects


def test_stop_writing_when_run_taken_by_another_worker(sessions) -> None:
    """A worker whose run was requeued and claimed elsewhere stops and writes nothing more."""
    run_id = claimed_run(sessions)
    sink = DbSink(run_id=run_id, worker_id=WORKER, sessions=sessions)
    sink.on_probe(record(10))
    with sessions() as s, s.begin():
        s.get(Run, run_id).claimed_by = "other:2:def"
    sink.on_probe(record(20))
    assert sink.lost and sink.should_stop() and counts(sessions, run_id) == (1, 2)


def test_read_only_sqlite_is_a_storage_failure_not_a_retry(tmp_path: Path) -> None:
    """A SQLite file opened read-only (what an immutable file or a read-only mount gives):
    the flush raises at once, named as storage that refuses writes (not retried for minutes
    like a restarting server), while a server that is down stays a transient error."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError

    url = f"sqlite:///{tmp_path / 'sink.db'}"
    upgrade(url)
    with sessionmaker(bind=make_engine(url))() as s, s.begin():
        run_id = add_bare_run(s, claimed_by=WORKER).id
    read_only = create_engine(f"sqlite:///file:{tmp_path / 'sink.db'}?mode=ro&uri=true")
    sink = DbSink(run_id=run_id, worker_id=WORKER, sessions=sessionmaker(bind=read_only))
    with pytest.raises(OperationalError) as refused:  # at once: no backoff, no retry
        sink.on_probe(record(10))
    assert len(sink.buffer) == 1  # kept: nothing was stored
    assert storage_failure(refused.value) == "SQLite: attempt to write a readonly database"
    assert not is_transient(refused.value)
    down = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x?connect_timeout=2")
    with pytest.raises(OperationalError) as unreachable:
        down.connect()
    assert storage_failure(unreachable.value) is None and is_transient(unreachable.value)
