"""crud.packs: an ended run's packed series read back exactly as its rows; packs only for ended
runs; the reconciler's pass packs ended runs that have none."""

from __future__ import annotations

import threading

import numpy as np

from backend.crud import metrics as crud
from backend.crud import packs
from backend.db.models import LAYER_KEYS, LayerStat, SeriesPack
from tests.utils.runs import create_random_run


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def _layers(session, runs, **kw):
    """Per run id: (layers, raw points), without the read's plan (test_api_layer_bounds.py)."""
    read = crud.read_layers_many(session=session, runs=runs, **kw)
    return {i: (series, raw) for i, (series, raw, _) in read.items()}


def test_read_packed_series_equal_rows(session, monkeypatch):
    """Layers and metrics from packs equal the row path's, NULL → NaN and downsampling included."""
    run = create_random_run(session, status="succeeded", n_steps=400, n_layers=3, every=1)
    session.add(LayerStat(run_id=run.id, layer=2, step=99_999, shift=None, train_var=2.0))
    session.commit()
    first = _layers(session, [run], keys=["shift,train_var"], max_points=50)  # packs it
    keys = {p.key for p in session.query(SeriesPack).filter_by(run_id=run.id, kind="layers")}
    assert keys == {"layer", "step", "shift", "train_var"}  # only what a reader asked
    packed = _layers(session, [run], keys=["shift,train_var"], max_points=50)
    metrics = crud.read_metrics_many(session=session, runs=[run], max_points=64)
    monkeypatch.setattr(packs, "usable", lambda _s: False)
    rows = _layers(session, [run], keys=["shift,train_var"], max_points=50)
    row_metrics = crud.read_metrics_many(session=session, runs=[run], max_points=64)
    for got in (first, packed):
        (layers, raw), (want, want_raw) = got[run.id], rows[run.id]
        assert raw == want_raw == 401
        assert [x[:3] for x in layers] == [x[:3] for x in want]
        assert all(_same(a[3], b[3]) for a, b in zip(layers, want, strict=True))
    assert np.isnan(packed[run.id][0][2][3]["shift"][-1])
    assert metrics[run.id][1] == row_metrics[run.id][1] == 400
    assert _same(metrics[run.id][0], row_metrics[run.id][0])


def test_read_packed_series_without_rows(session, monkeypatch):
    """Once packed, an ended run's series come from the pack, not from its rows."""
    run = create_random_run(session, status="succeeded", n_steps=10, n_layers=2)
    _layers(session, [run])
    monkeypatch.setattr(
        crud, "_live_tables", lambda *a: (_ for _ in ()).throw(AssertionError("rows read"))
    )
    layers, raw = _layers(session, [run], keys=["eval_var"])[run.id]
    assert raw == 10 and len(layers) == 2


def test_read_packed_series_with_new_keys(session, monkeypatch):
    """Keys not packed yet are read from the rows and packed beside the others; every key of
    the pack then reads back as the rows hold it."""
    run = create_random_run(session, status="succeeded", n_steps=30, n_layers=2)
    _layers(session, [run], keys=["shift"])
    both = _layers(session, [run], keys=["shift,eval_var"])[run.id]
    every = _layers(session, [run])[run.id]
    keys = {p.key for p in session.query(SeriesPack).filter_by(run_id=run.id, kind="layers")}
    assert keys == {"layer", "step", *LAYER_KEYS}
    monkeypatch.setattr(packs, "usable", lambda _s: False)
    rows = _layers(session, [run])[run.id]
    assert all(_same(a[3], b[3]) for a, b in zip(every[0], rows[0], strict=True))
    assert all(
        _same(a[3], {k: b[3][k] for k in ("step", "shift", "eval_var")})
        for a, b in zip(both[0], rows[0], strict=True)
    )


def test_skip_packing_running_and_queued_runs(session):
    """A run that may still add points is read from its rows every time."""
    running = create_random_run(session, status="running", n_steps=10, n_layers=2)
    queued = create_random_run(session, status="queued")
    crud.read_metrics_many(session=session, runs=[running, queued])
    _layers(session, [running, queued])
    assert (
        session.query(SeriesPack).filter(SeriesPack.run_id.in_([running.id, queued.id])).count()
        == 0
    )


def test_pack_ended_runs(session):
    """The reconciler's pass packs ended runs without packs (empty ones too), once."""
    ended = create_random_run(session, status="succeeded", n_steps=5, n_layers=1)
    empty = create_random_run(session, status="cancelled")
    running = create_random_run(session, status="running", n_steps=5, n_layers=1)
    done = crud.pack_ended_runs(session=session, limit=1000)
    assert {ended.id, empty.id} <= set(done) and running.id not in done
    assert not {ended.id, empty.id} & set(crud.pack_ended_runs(session=session, limit=1000))
    layers, raw = _layers(session, [empty])[empty.id]
    assert layers == [] and raw == 0


def test_store_packs_concurrently_without_deadlock(engine, monkeypatch):
    """Writers packing the same runs with other key sets in other orders at once (a reader and
    the reconciler) never deadlock: every writer locks rows in one order. Committed data, as
    concurrent connections cannot see a test's rolled-back transaction."""
    from sqlalchemy.orm import sessionmaker

    from backend.crud.runs import get_runs
    from backend.db.models import Run

    maker = sessionmaker(bind=engine, expire_on_commit=False)
    with maker() as s:
        ids = [create_random_run(s, status="succeeded").id for _ in range(10)]
    failures = []
    monkeypatch.setattr(packs.log, "warning", lambda *a: failures.append(a))
    every = ["layer", "step", *LAYER_KEYS]
    some = ["layer", "step", "shift", "eval_var", "running_var", "train_var"]

    def write(columns):
        for _ in range(10):
            with maker() as s:
                runs = get_runs(session=s, run_ids=ids)
                packs.store(
                    s, [(r, np.zeros((len(columns), 4000))) for r in runs], "layers", columns
                )

    threads = [
        threading.Thread(target=write, args=(c,)) for c in (every, some, every[::-1], some[::-1])
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        with maker() as s:
            s.query(Run).filter(Run.id.in_(ids)).delete()
            s.commit()
    assert failures == []
