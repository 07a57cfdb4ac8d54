"""crud.metrics reads: the PostgreSQL COPY fast path and the portable path agree; SQLite works."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy.orm import Session

from backend.crud import metrics as crud
from backend.db.models import Base, LayerStat, RunMetric
from backend.db.session import make_engine
from tests.utils.runs import add_bare_run, create_random_run


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def test_read_layers_fast_path_matches_portable(session, monkeypatch):
    """The binary-COPY path returns exactly what the row-by-row path returns (NULL → NaN)."""
    run = create_random_run(session, n_steps=50, n_layers=3)
    session.add(LayerStat(run_id=run.id, layer=1, step=99_999, shift=None, train_var=2.0))
    session.commit()
    fast, raw_fast = crud.read_layers(session=session, run=run)
    monkeypatch.setattr(crud, "_is_pg", lambda _s: False)
    slow, raw_slow = crud.read_layers(session=session, run=run)
    assert raw_fast == raw_slow == 51
    assert [(i, n, c) for i, n, c, _ in fast] == [(i, n, c) for i, n, c, _ in slow]
    assert all(_same(f[3], s[3]) for f, s in zip(fast, slow, strict=True))


def test_read_metrics_fast_path_matches_portable(session, monkeypatch):
    """Both metric paths agree, including a key subset and downsampling."""
    run = create_random_run(session, n_steps=300, every=3)
    fast = crud.read_metrics(session=session, run_id=run.id, keys=["val_acc,lr"], max_points=40)
    monkeypatch.setattr(crud, "_is_pg", lambda _s: False)
    slow = crud.read_metrics(session=session, run_id=run.id, keys=["val_acc,lr"], max_points=40)
    assert fast[1] == slow[1] == 300 and _same(fast[0], slow[0])


@pytest.fixture
def sqlite_session(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'metrics.db'}")
    Base.metadata.create_all(engine)
    with Session(engine) as db:
        yield db
    engine.dispose()


def test_read_layers_on_sqlite(sqlite_session):
    """The embedded set-up (SQLite) serves the same columnar layers."""
    run = add_bare_run(sqlite_session, name="s", layer_names=["a", "b"])
    sqlite_session.add_all(
        [
            LayerStat(run_id=run.id, layer=layer, step=s, shift=float(s + layer))
            for layer in (0, 1)
            for s in (0, 10, 20)
        ]
    )
    sqlite_session.add_all([RunMetric(run_id=run.id, step=s, val_acc=s / 100) for s in (0, 10)])
    sqlite_session.commit()
    layers, raw = crud.read_layers(session=sqlite_session, run=run)
    assert raw == 3 and [n for _, n, _, _ in layers] == ["a", "b"]
    assert layers[1][3]["shift"].tolist() == [1.0, 11.0, 21.0]
    assert np.isnan(layers[0][3]["train_var"]).all()
    cols, n = crud.read_metrics(session=sqlite_session, run_id=run.id, keys=["val_acc"])
    assert n == 2 and cols["val_acc"].tolist() == [0.0, 0.1]
