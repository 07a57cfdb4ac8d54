"""`bnlab.train_run` through a real Celery worker subprocess, on PostgreSQL + Redis and on the
embedded SQLite + filesystem broker (the `served` fixture runs every test on both)."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import select

from backend.broker import enqueue_run
from backend.crud.workers import live_workers
from backend.db.models import LayerStat, Run, RunMetric
from tests.worker.procs import slow_config, tiny_config, wait_for

pytestmark = pytest.mark.slow


def test_train_run_stores_sane_series(served) -> None:
    """A tiny config trains to `succeeded`; every probe step has a metric row and one row per
    BN layer, with finite values in their ranges, and the summary is written."""
    run_id = served.create_run(tiny_config())
    run = served.wait_status(run_id)
    assert run.status == "succeeded", (run.error, served.worker_log())
    with served.sessions() as s:
        metrics = s.scalars(select(RunMetric).where(RunMetric.run_id == run_id)).all()
        layers = s.scalars(select(LayerStat).where(LayerStat.run_id == run_id)).all()
    assert len(metrics) >= 5 and len(layers) == len(metrics) * len(run.layer_names)
    assert all(0.0 <= m.val_acc <= 1.0 and math.isfinite(m.train_loss) for m in metrics)
    assert all(x.train_var > 0 and x.running_var > 0 and math.isfinite(x.shift) for x in layers)
    assert run.summary["test_acc_eval"] > 0.5, run.summary


def test_pack_series_when_run_ends(served) -> None:
    """On PostgreSQL the worker stores packed copies of the ended run's series (its first reader
    then reads those) and they read back equal to the rows; SQLite keeps no packs."""
    from backend.crud import packs
    from backend.crud.metrics import read_layers
    from backend.db.models import SeriesPack

    run_id = served.create_run(tiny_config())
    run = served.wait_status(run_id)
    assert run.status == "succeeded", (run.error, served.worker_log())

    def pack_kinds() -> set[str]:
        with served.sessions() as s:
            return set(s.scalars(select(SeriesPack.kind).where(SeriesPack.run_id == run_id)))

    with served.sessions() as s:
        usable = packs.usable(s)
    if not usable:
        assert pack_kinds() == set()
        return
    # The worker packs right after it records the end (a pack's signature includes the final
    # status and finish time), so the status can be read a moment before the packs are there.
    wait_for(lambda: pack_kinds() == {"metrics", "layers"}, 30, "the worker's packs")
    with served.sessions() as s:
        run = s.get(Run, run_id)
        from_packs = read_layers(session=s, run=run)
        s.execute(SeriesPack.__table__.delete().where(SeriesPack.run_id == run_id))
        from_rows = read_layers(session=s, run=run)
    assert repr(from_packs) == repr(from_rows)


def test_record_host_device_attempt_on_claim(served) -> None:
    """The worker marks the run with its host, the device and attempt 1."""
    run = served.wait_status(served.create_run(tiny_config()))
    assert (bool(run.host), run.device.startswith("cpu"), run.attempt) == (True, True, 1)


def test_delete_checkpoint_when_run_ends(served) -> None:
    """The epoch checkpoint is removed once the run has ended."""
    run_id = served.create_run(tiny_config())
    served.wait_status(run_id)
    assert not (served.settings.checkpoints_dir / f"run-{run_id}.pt").exists()


def test_train_once_when_message_duplicated(served) -> None:
    """Three messages for one run train it once: the claim in the database is atomic."""
    run_id = served.create_run(tiny_config())
    enqueue_run(run_id, served.app)
    enqueue_run(run_id, served.app)
    run = served.wait_status(run_id)
    wait_for(
        lambda: served.worker_log().count(f"run {run_id}: not claimable") >= 2,
        60,
        "the duplicate messages to be skipped",
    )
    assert (run.status, served.run(run_id).attempt) == ("succeeded", 1)


def test_fail_run_when_config_invalid(served) -> None:
    """A stored config that no longer validates ends `failed`, naming the field."""
    run_id = served.create_run(tiny_config(train__epochs=0))
    run = served.wait_status(run_id)
    assert run.status == "failed" and "train.epochs" in run.error, run.error


def test_fail_run_with_error_text_when_engine_raises(served) -> None:
    """An exception in the engine (a dataset file that is missing) ends `failed` with its text."""
    run_id = served.create_run(tiny_config(dataset__name="mnist", dataset__path="no/such/dir"))
    run = served.wait_status(run_id)
    assert run.status == "failed" and run.error and "no/such/dir" in run.error, run.error


def test_cancel_running_run_within_one_probe(served) -> None:
    """cancel_requested on a running run stops it at the next probe and ends it `cancelled`."""
    cfg = slow_config(train__epochs=2)
    every = cfg["probe"]["every_steps"]
    run_id = served.create_run(cfg)
    wait_for(lambda: served.run(run_id).step >= every, 60, "the first probe")
    with served.sessions() as s, s.begin():
        run = s.get(Run, run_id)
        run.cancel_requested = True
        step_at_cancel = run.step
    run = served.wait_status(run_id)
    # The probe in flight when the flag was set may still land, then the next one stops it.
    assert run.status == "cancelled" and run.step <= step_at_cancel + 2 * every, (
        run.status,
        run.step,
        step_at_cancel,
    )


def test_list_live_worker_in_workers_table(served) -> None:
    """The running worker heartbeats its row, so live_workers reports it."""
    with served.sessions() as s:
        assert wait_for(lambda: live_workers(s, timeout_s=5), 30, "a live worker row")
