"""POST/GET /api/runs, GET /api/runs/{id}, cancel, retry, delete through the HTTP API."""

from __future__ import annotations

import redis

from backend.broker import QUEUE
from backend.db.models import LayerStat, Run
from tests.conftest import REDIS_URL
from tests.utils.runs import add_points, create_random_run, make_config


def test_create_run_returns_queued_run(client):
    """A valid config answers 201 with the stored run in status `queued`."""
    res = client.post("/api/runs", json=make_config(name="hello"))
    assert res.status_code == 201, res.text
    body = res.json()
    assert (body["status"], body["name"], body["attempt"]) == ("queued", "hello", 0)
    assert body["config"]["model"]["widths"] == [16, 16]


def test_create_run_enqueues_message_on_redis(client):
    """The run id is sent to the broker (real Redis) and `enqueued_at` stamped after commit."""
    r = redis.Redis.from_url(REDIS_URL)
    before = r.llen(QUEUE)
    body = client.post("/api/runs", json=make_config()).json()
    assert body["enqueued_at"] is not None
    assert r.llen(QUEUE) == before + 1
    assert f"[{body['id']}]".encode() in r.lindex(QUEUE, 0)


def test_create_run_rejects_bad_field_with_path(client):
    """An invalid value is a 422 whose message names the dotted field path."""
    res = client.post("/api/runs", json=make_config(model__dropout__rate=1.5))
    assert res.status_code == 422
    assert "model.dropout.rate" in res.json()["message"]
    assert res.json()["detail"][0]["field"] == "model.dropout.rate"


def test_create_run_rejects_unknown_key(client):
    """A typo in a key is refused, naming it, instead of being ignored."""
    res = client.post("/api/runs", json=make_config(train__epochz=3))
    assert res.status_code == 422
    assert "train.epochz" in res.json()["message"]


def test_create_run_rejects_epochs_over_cap(client, monkeypatch):
    """train.epochs above BNLAB_MAX_EPOCHS is a 422 naming train.epochs."""
    from backend.settings import settings

    monkeypatch.setattr(settings, "max_epochs", 3)
    res = client.post("/api/runs", json=make_config(train__epochs=4))
    assert res.status_code == 422
    assert res.json()["detail"][0]["field"] == "train.epochs"
    assert client.post("/api/runs", json=make_config(train__epochs=3)).status_code == 201


def test_create_run_rejects_model_over_param_cap(client, monkeypatch):
    """A model estimated above BNLAB_MAX_PARAMS is a 422 naming model.widths."""
    from backend.settings import settings

    monkeypatch.setattr(settings, "max_params", 10_000)
    res = client.post("/api/runs", json=make_config(model__widths=[512, 512]))
    assert res.status_code == 422
    assert res.json()["detail"][0]["field"] == "model.widths"


def test_create_run_rejects_path_escaping_datasets_root(client):
    """dataset.path outside BNLAB_DATASETS_DIR (`..`) is a 422 naming dataset.path."""
    cfg = make_config(dataset={"name": "mnist", "path": "../../etc"})
    res = client.post("/api/runs", json=cfg)
    assert res.status_code == 422
    assert res.json()["detail"][0]["field"] == "dataset.path"


def test_create_run_rejects_symlink_out_of_root(client, data_dir, tmp_path):
    """A symlink inside the datasets root that leads out of it is refused."""
    root = data_dir / "datasets"
    root.mkdir(exist_ok=True)
    link = root / "escape"
    if not link.exists():
        link.symlink_to(tmp_path)
    res = client.post("/api/runs", json=make_config(dataset={"name": "mnist", "path": "escape"}))
    assert res.status_code == 422
    assert res.json()["detail"][0]["field"] == "dataset.path"


def test_create_run_rejects_unknown_upload(client):
    """dataset.upload_id that was never uploaded is a 422 naming dataset.upload_id."""
    res = client.post(
        "/api/runs", json=make_config(dataset={"name": "upload", "upload_id": "nope"})
    )
    assert res.status_code == 422
    assert res.json()["detail"][0]["field"] == "dataset.upload_id"


def test_create_run_rejects_nul_in_name(client):
    """A NUL character (PostgreSQL text cannot hold it) is a 422 naming the field, not a 500."""
    res = client.post("/api/runs", json=make_config(name="a\x00b"))
    assert res.status_code == 422
    assert res.json()["detail"][0]["field"] == "name"


def test_create_run_rejects_non_finite_number(client):
    """NaN in the body (Python's json accepts it) is a 422 naming the field."""
    body = '{"model": {"batchnorm": {"gamma_init": NaN}}}'
    res = client.post("/api/runs", content=body, headers={"Content-Type": "application/json"})
    assert res.status_code == 422, res.text
    assert "model.batchnorm.gamma_init" in res.json()["message"]


def test_read_run_returns_documented_fields(client, session):
    """GET /api/runs/{id} has every field of the docs/design.md shape."""
    run = create_random_run(
        session,
        status="succeeded",
        summary={"test_acc_eval": 0.9, "test_acc_train_mode": {"1": 0.1}},
    )
    body = client.get(f"/api/runs/{run.id}").json()
    for key in (
        "id",
        "name",
        "status",
        "config",
        "created_at",
        "started_at",
        "finished_at",
        "device",
        "progress",
        "attempt",
        "error",
        "summary",
    ):
        assert key in body, key
    assert body["summary"]["test_acc_train_mode"] == {"1": 0.1}


def test_read_run_missing_is_404(client):
    """An unknown id is a 404, and an id beyond 32 bits is a 422, never a 500."""
    assert client.get("/api/runs/999999").status_code == 404
    assert client.get("/api/runs/99999999999").status_code == 422


def test_read_runs_filters_by_status(client, session):
    """?status= keeps only runs in those statuses (comma-separated or repeated)."""
    a = create_random_run(session, status="running")
    b = create_random_run(session, status="failed")
    c = create_random_run(session, status="succeeded")
    ids = {r["id"] for r in client.get("/api/runs?status=running,failed").json()["data"]}
    assert {a.id, b.id} <= ids and c.id not in ids


def test_read_runs_rejects_unknown_status(client):
    """An unknown status filter is a 422 naming `status`."""
    res = client.get("/api/runs?status=sleeping")
    assert res.status_code == 422 and res.json()["detail"][0]["field"] == "status"


def test_read_runs_filters_by_tag_and_text(client, session):
    """?tag= matches a whole tag; ?text= a case-insensitive part of the name."""
    a = create_random_run(session, config=make_config(name="Alpha one", tags=["x_y"]))
    b = create_random_run(session, config=make_config(name="beta", tags=["xay"]))
    assert [r["id"] for r in client.get("/api/runs?tag=x_y").json()["data"]] == [a.id]
    assert [r["id"] for r in client.get("/api/runs?text=ALPHA").json()["data"]] == [a.id]
    assert b.id in [r["id"] for r in client.get("/api/runs?text=bet").json()["data"]]


def test_read_runs_paginates_with_total_count(client, session):
    """limit/offset page through runs newest first; count is the total."""
    made = [create_random_run(session, config=make_config(tags=["page"])).id for _ in range(5)]
    first = client.get("/api/runs?tag=page&limit=2").json()
    second = client.get("/api/runs?tag=page&limit=2&offset=2").json()
    assert first["count"] == second["count"] == 5
    assert [r["id"] for r in first["data"] + second["data"]] == sorted(made, reverse=True)[:4]


def test_cancel_run_queued_ends_cancelled(client, session):
    """Cancelling a queued run ends it `cancelled` at once."""
    run = create_random_run(session, status="queued")
    body = client.post(f"/api/runs/{run.id}/cancel").json()
    assert body["status"] == "cancelled" and body["finished_at"] is not None


def test_cancel_run_running_sets_flag(client, session):
    """Cancelling a running run flags it for the worker; it stays running until the worker stops."""
    run = create_random_run(session, status="running")
    body = client.post(f"/api/runs/{run.id}/cancel").json()
    assert (body["status"], body["cancel_requested"]) == ("running", True)


def test_cancel_run_finished_is_conflict(client, session):
    """A run that already ended cannot be cancelled (409)."""
    run = create_random_run(session, status="succeeded")
    assert client.post(f"/api/runs/{run.id}/cancel").status_code == 409


def test_retry_run_creates_new_run_with_same_config(client, session):
    """Retry makes a new queued run with an identical config."""
    run = create_random_run(session, status="failed")
    body = client.post(f"/api/runs/{run.id}/retry").json()
    assert body["id"] != run.id and body["status"] == "queued"
    assert body["config"] == run.config


def test_delete_run_removes_run_points_and_export(client, session, data_dir):
    """Deleting an ended run removes its row, its series and its export directory."""
    run = create_random_run(session, status="succeeded", n_steps=3, n_layers=2)
    export = data_dir / "exports" / f"run-{run.id}"
    export.mkdir(parents=True)
    (export / "model.npz").write_bytes(b"x")
    assert client.delete(f"/api/runs/{run.id}").status_code == 204
    assert session.get(Run, run.id) is None
    assert session.query(LayerStat).filter_by(run_id=run.id).count() == 0
    assert not export.exists()


def test_delete_run_running_is_conflict(client, session):
    """A running run is not deleted (409): cancel it first."""
    run = create_random_run(session, status="running")
    add_points(session, run.id, n_steps=2, n_layers=1)
    assert client.delete(f"/api/runs/{run.id}").status_code == 409
    assert session.get(Run, run.id) is not None


def _key_paths(d: dict, prefix: str = "") -> list[str]:
    """Every key path in document order (nested dicts included)."""
    out = []
    for k, v in d.items():
        out.append(prefix + k)
        if isinstance(v, dict):
            out += _key_paths(v, f"{prefix}{k}.")
    return out


def test_read_run_keeps_the_config_field_order(client, session):
    """runs.config is JSONB on PostgreSQL (keys stored shortest first); the API gives the keys
    back in the config schema's order, as submitted, in the list and the single-run reads."""
    created = client.post("/api/runs", json=make_config(name="order")).json()
    order = _key_paths(created["config"])
    assert order.index("dataset") < order.index("model") < order.index("train")
    session.expire_all()
    assert _key_paths(client.get(f"/api/runs/{created['id']}").json()["config"]) == order
    listed = client.get("/api/runs", params={"ids": str(created["id"])}).json()["data"]
    assert [_key_paths(r["config"]) for r in listed] == [order]
