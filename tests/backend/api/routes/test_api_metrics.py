"""GET /api/runs/{id}/metrics and /layers: columnar series, keys filter, downsampling."""

from __future__ import annotations

import math

from backend.db.models import LAYER_KEYS, METRIC_KEYS, RunMetric
from tests.utils.runs import add_points, create_random_run


def test_read_metrics_is_columnar(client, session):
    """Every metric key is a list aligned with `step`; steps ascend; raw count in X-Raw-Points."""
    run = create_random_run(session, status="running", n_steps=30, every=10)
    res = client.get(f"/api/runs/{run.id}/metrics")
    body = res.json()
    assert set(body) == {"step", *METRIC_KEYS}
    assert body["step"] == [10 * i for i in range(30)]
    assert all(len(body[k]) == 30 for k in METRIC_KEYS)
    assert res.headers["X-Raw-Points"] == "30"


def test_read_metrics_matches_stored_values(client, session):
    """The served numbers are the stored ones."""
    run = create_random_run(session, n_steps=5)
    stored = session.query(RunMetric).filter_by(run_id=run.id).order_by(RunMetric.step).all()
    body = client.get(f"/api/runs/{run.id}/metrics").json()
    assert body["val_acc"] == [m.val_acc for m in stored]


def test_read_metrics_selects_keys(client, session):
    """?keys=val_acc,train_loss returns only those (and step)."""
    run = create_random_run(session, n_steps=5)
    body = client.get(f"/api/runs/{run.id}/metrics?keys=val_acc,train_loss").json()
    assert set(body) == {"step", "val_acc", "train_loss"}


def test_read_metrics_rejects_unknown_key(client, session):
    """An unknown key is a 422 naming `keys`."""
    run = create_random_run(session)
    res = client.get(f"/api/runs/{run.id}/metrics?keys=accuracy")
    assert res.status_code == 422 and res.json()["detail"][0]["field"] == "keys"


def test_read_metrics_sends_null_for_missing_values(client, session):
    """A value that was never recorded is null in its column."""
    run = create_random_run(session)
    session.add(RunMetric(run_id=run.id, step=0, train_loss=1.0))
    session.commit()
    body = client.get(f"/api/runs/{run.id}/metrics").json()
    assert body["train_loss"] == [1.0] and body["val_acc"] == [None]


def test_read_metrics_empty_run(client, session):
    """A queued run has empty columns, not an error."""
    run = create_random_run(session)
    body = client.get(f"/api/runs/{run.id}/metrics").json()
    assert body["step"] == [] and body["val_acc"] == []


def test_read_metrics_downsamples_keeping_dip(client, session):
    """?max_points caps the points, keeps the endpoints and a one-step dip to zero."""
    run = create_random_run(session, n_steps=2000, every=1)
    session.query(RunMetric).filter_by(run_id=run.id, step=1357).update({"val_acc": 0.0})
    session.commit()
    res = client.get(f"/api/runs/{run.id}/metrics?keys=val_acc&max_points=100")
    body = res.json()
    assert len(body["step"]) <= 100
    assert body["step"][0] == 0 and body["step"][-1] == 1999
    assert 1357 in body["step"] and min(body["val_acc"]) == 0.0
    assert res.headers["X-Raw-Points"] == "2000"


def test_read_metrics_rejects_tiny_max_points(client, session):
    """max_points below the minimum is a 422 naming max_points."""
    run = create_random_run(session)
    res = client.get(f"/api/runs/{run.id}/metrics?max_points=3")
    assert res.status_code == 422 and res.json()["detail"][0]["field"] == "max_points"


def test_read_layers_is_columnar_per_layer(client, session):
    """One entry per BN layer with its name, index and every LAYER_KEYS column."""
    run = create_random_run(session, n_steps=12, n_layers=3)
    body = client.get(f"/api/runs/{run.id}/layers").json()
    assert [layer["index"] for layer in body["layers"]] == [0, 1, 2]
    assert [layer["name"] for layer in body["layers"]] == [
        "blocks.0.bn",
        "blocks.1.bn",
        "blocks.2.bn",
    ]
    for layer in body["layers"]:
        assert all(len(layer[k]) == len(layer["step"]) == 12 for k in LAYER_KEYS)
    assert body["raw_points"] == 12


def test_read_layers_keeps_layers_apart(client, session):
    """Each layer's values are its own (layer 1's stats are twice layer 0's in the fixture)."""
    run = create_random_run(session, n_steps=4, n_layers=2)
    layers = client.get(f"/api/runs/{run.id}/layers").json()["layers"]
    ratio = [b / a for a, b in zip(layers[0]["shift"], layers[1]["shift"], strict=True)]
    assert all(math.isclose(r, 2.0) for r in ratio)


def test_read_layers_selects_keys(client, session):
    """?keys=train_var,eval_var returns only those columns per layer, with the same values."""
    run = create_random_run(session, n_steps=6, n_layers=2)
    full = client.get(f"/api/runs/{run.id}/layers").json()["layers"]
    some = client.get(f"/api/runs/{run.id}/layers?keys=train_var,eval_var").json()["layers"]
    assert set(some[1]) == {"index", "name", "raw_points", "step", "train_var", "eval_var"}
    assert some[1]["eval_var"] == full[1]["eval_var"]


def test_read_layers_rejects_unknown_key(client, session):
    """An unknown layer key is a 422 naming `keys`."""
    run = create_random_run(session)
    res = client.get(f"/api/runs/{run.id}/layers?keys=val_acc")
    assert res.status_code == 422 and res.json()["detail"][0]["field"] == "keys"


def test_read_layers_downsamples_each_layer(client, session):
    """?max_points caps every layer's points and reports the raw count per layer."""
    run = create_random_run(session, n_steps=1000, n_layers=2, every=1)
    body = client.get(f"/api/runs/{run.id}/layers?max_points=64").json()
    for layer in body["layers"]:
        assert len(layer["step"]) <= 64 and layer["raw_points"] == 1000
        assert layer["step"][0] == 0 and layer["step"][-1] == 999


def test_read_layers_of_running_run_grows(client, session):
    """New probe points appear on the next read (no caching of a running run's series)."""
    run = create_random_run(session, status="running", n_steps=3, n_layers=1)
    add_points(session, run.id, n_steps=2, n_layers=1, start=1000)
    assert len(client.get(f"/api/runs/{run.id}/layers").json()["layers"][0]["step"]) == 5


def test_read_layers_missing_run_is_404(client):
    """Series of an unknown run are a 404."""
    assert client.get("/api/runs/987654/layers").status_code == 404


def test_read_layers_of_ended_run_has_etag_and_304(client, session):
    """An ended run's series carry an ETag; revalidating with it answers 304 without a body."""
    run = create_random_run(session, status="succeeded", n_steps=5, n_layers=2)
    first = client.get(f"/api/runs/{run.id}/layers")
    etag = first.headers["ETag"]
    again = client.get(f"/api/runs/{run.id}/layers", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert client.get(f"/api/runs/{run.id}/layers").json() == first.json()


def test_read_metrics_of_running_run_is_not_cached(client, session):
    """A running run's series are never cached (no ETag, no-store)."""
    run = create_random_run(session, status="running", n_steps=5)
    res = client.get(f"/api/runs/{run.id}/metrics")
    assert "ETag" not in res.headers and res.headers["Cache-Control"] == "no-store"


def test_read_metrics_cache_follows_run_row(client, session):
    """When the run row changes (a late flush moves `step`), the ETag and the body change too."""
    run = create_random_run(session, status="succeeded", n_steps=3)
    before = client.get(f"/api/runs/{run.id}/metrics")
    add_points(session, run.id, n_steps=1, n_layers=0, start=5000)
    run.step = 5000
    session.commit()
    after = client.get(
        f"/api/runs/{run.id}/metrics", headers={"If-None-Match": before.headers["ETag"]}
    )
    assert after.status_code == 200 and after.json()["step"][-1] == 5000
    assert after.headers["ETag"] != before.headers["ETag"]
