"""The same API on the embedded default (SQLite file, WAL): submit, filter, series, delete."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import sessionmaker

from backend.api.deps import get_session
from backend.api.main import create_app
from backend.db.migrate import upgrade
from backend.db.session import make_engine
from tests.utils.runs import add_points, create_random_run, make_config


@pytest.fixture
def sqlite_client(tmp_path, api_db) -> Iterator[tuple[TestClient, sessionmaker]]:
    """A client whose sessions use a fresh, migrated SQLite file (the broker stays Redis db 1)."""
    url = f"sqlite:///{tmp_path / 'bnlab.db'}"
    upgrade(url)
    engine = make_engine(url)
    maker = sessionmaker(bind=engine, expire_on_commit=False)
    app = create_app()

    def session():
        with maker() as s:
            yield s

    app.dependency_overrides[get_session] = session
    yield TestClient(app), maker
    engine.dispose()


def test_sqlite_submit_filter_and_read(sqlite_client):
    """Runs are created, filtered by status, tag and text, and read back on SQLite."""
    client, _ = sqlite_client
    a = client.post("/api/runs", json=make_config(name="Alpha", tags=["t_1"])).json()
    client.post("/api/runs", json=make_config(name="beta", tags=["t1"]))
    assert [r["id"] for r in client.get("/api/runs?tag=t_1").json()["data"]] == [a["id"]]
    assert [r["id"] for r in client.get("/api/runs?text=alp&status=queued").json()["data"]] == [
        a["id"]
    ]
    assert client.get(f"/api/runs/{a['id']}").json()["config"]["name"] == "Alpha"


def test_sqlite_series_and_delete(sqlite_client):
    """Columnar metrics/layers (downsampled too) come back from SQLite; delete removes them."""
    client, maker = sqlite_client
    with maker() as s:
        run = create_random_run(s, status="succeeded", n_steps=300, n_layers=2, every=1)
        add_points(s, run.id, n_steps=1, n_layers=2, start=10_000)
    layers = client.get(f"/api/runs/{run.id}/layers?max_points=50").json()
    assert [len(layer["step"]) <= 50 for layer in layers["layers"]] == [True, True]
    assert layers["layers"][1]["step"][-1] == 10_000 and layers["raw_points"] == 301
    metrics = client.get(f"/api/runs/{run.id}/metrics?keys=val_acc").json()
    assert len(metrics["val_acc"]) == 301
    assert client.delete(f"/api/runs/{run.id}").status_code == 204
    assert client.get(f"/api/runs/{run.id}/layers").status_code == 404


def test_sqlite_read_compare(sqlite_client):
    """GET /api/compare on SQLite: per run, what the per-run endpoints answer; unknown ids 404."""
    client, maker = sqlite_client
    with maker() as s:
        ids = [
            create_random_run(s, status=status, n_steps=120, n_layers=n, every=1, seed=n).id
            for status, n in (("succeeded", 2), ("running", 3), ("failed", 0))
        ]
    res = client.get(
        "/api/compare",
        params={"runs": ",".join(map(str, ids)), "max_points": 40, "layer_keys": "shift,eval_var"},
    )
    for entry, run_id in zip(res.json()["runs"], ids, strict=True):
        layers = client.get(f"/api/runs/{run_id}/layers?keys=shift,eval_var&max_points=40").json()
        metrics = client.get(f"/api/runs/{run_id}/metrics?max_points=40")
        assert entry["layers"] == layers and entry["metrics"] == metrics.json()
        assert entry["metrics_raw_points"] == int(metrics.headers["X-Raw-Points"]) == 120
        assert entry["run"] == client.get(f"/api/runs/{run_id}").json()
    assert [len(e["layers"]["layers"]) for e in res.json()["runs"]] == [2, 3, 0]
    missing = client.get(f"/api/compare?runs={ids[0]},{ids[-1] + 100}")
    assert missing.status_code == 404 and missing.json()["detail"][0]["input"] == [ids[-1] + 100]
