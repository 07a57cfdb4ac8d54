"""step_min/step_max on /metrics, /layers and /api/compare: a zoomed chart's re-fetch gets
min/max buckets inside its window only, keeps the window's extremes, and says the same thing
through the batched and the per-run endpoints."""

from __future__ import annotations

from sqlalchemy import update

from backend.db.models import LayerStat, RunMetric
from tests.utils.runs import create_random_run

N, SPIKE = 2000, 1234


def _run(session, status="succeeded"):
    run = create_random_run(session, status=status, n_steps=N, n_layers=2, every=1)
    session.execute(
        update(RunMetric)
        .where(RunMetric.run_id == run.id, RunMetric.step == SPIKE)
        .values(val_acc=-5.0)
    )
    session.execute(
        update(LayerStat)
        .where(LayerStat.run_id == run.id, LayerStat.step == SPIKE + 1)
        .values(train_var=99.0)
    )
    session.commit()
    return run


def test_window_keeps_extremes_and_gains_detail(client, session):
    run = _run(session)
    full = client.get(f"/api/runs/{run.id}/metrics", params={"keys": "val_acc", "max_points": 100})
    zoom = client.get(
        f"/api/runs/{run.id}/metrics",
        params={"keys": "val_acc", "max_points": 100, "step_min": 1000, "step_max": 1400},
    ).json()
    assert zoom["step"][0] == 1000 and zoom["step"][-1] == 1400
    assert all(1000 <= s <= 1400 for s in zoom["step"]) and len(zoom["step"]) <= 100
    assert min(zoom["val_acc"]) == -5.0 and zoom["step"][zoom["val_acc"].index(-5.0)] == SPIKE
    in_window = [s for s in full.json()["step"] if 1000 <= s <= 1400]
    assert len(zoom["step"]) > 2 * len(in_window)  # the re-fetch adds detail
    assert full.headers["X-Raw-Points"] == str(N)
    layers = client.get(
        f"/api/runs/{run.id}/layers",
        params={
            "keys": "train_var",
            "max_points": 64,
            "step_min": SPIKE - 300,
            "step_max": SPIKE + 300,
        },
    ).json()
    for layer in layers["layers"]:
        assert layer["step"][0] == SPIKE - 300 and layer["step"][-1] == SPIKE + 300
        assert 99.0 in layer["train_var"]


def test_compare_window_equals_per_run(client, session):
    runs = [_run(session), _run(session, status="running")]
    params = {"max_points": 50, "step_min": 500, "step_max": 900}
    body = client.get(
        "/api/compare",
        params={
            "runs": ",".join(str(r.id) for r in runs),
            "metric_keys": "val_acc",
            "layer_keys": "shift",
            **params,
        },
    ).json()
    for run, entry in zip(runs, body["runs"], strict=True):
        one = client.get(f"/api/runs/{run.id}/metrics", params={"keys": "val_acc", **params})
        assert entry["metrics"] == one.json()
        lay = client.get(f"/api/runs/{run.id}/layers", params={"keys": "shift", **params}).json()
        assert entry["layers"] == lay
        assert min(entry["metrics"]["step"]) == 500 and max(entry["metrics"]["step"]) == 900


def test_window_bad_order_is_422(client, session):
    run = _run(session)
    for url in (
        f"/api/runs/{run.id}/metrics",
        f"/api/runs/{run.id}/layers",
        "/api/compare",
    ):
        res = client.get(url, params={"runs": run.id, "step_min": 10, "step_max": 5})
        assert res.status_code == 422 and res.json()["detail"][0]["field"] == "step_max", url
    res = client.get(f"/api/runs/{run.id}/metrics", params={"step_min": -1})
    assert res.status_code == 422 and res.json()["detail"][0]["field"] == "step_min"
