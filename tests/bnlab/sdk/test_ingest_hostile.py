"""The SDK's REST endpoints on PostgreSQL against clients that get it wrong or mean harm:
every answer is a 4xx naming the problem or a correct store, never a 5xx, and never a change to
another run's data."""

from __future__ import annotations

import secrets

import orjson
import pytest

from bnlab.core.registry import LAYER_KEYS
from tests.utils.runs import create_random_run


def key() -> str:
    return secrets.token_urlsafe(32)


def new_run(client, name: str = "mine", **extra) -> tuple[int, dict]:
    k = key()
    r = client.post("/api/script-runs", json={"key": k, "name": name, **extra})
    assert r.status_code == 201, r.text
    return r.json()["id"], {"X-Bnlab-Run-Key": k}


def rows(step: int, n_layers: int = 2, base: float = 1.0) -> dict:
    return {
        "step": step,
        "metrics": {"train_loss": base + step, "my/metric": step * 2.0},
        "layers": [
            [base + step + i + k / 10 for k in range(len(LAYER_KEYS))] for i in range(n_layers)
        ],
    }


def post(client, run_id: int, headers: dict, records: list, **body):
    r = client.post(
        f"/api/runs/{run_id}/points", json={"records": records, **body}, headers=headers
    )
    assert r.status_code < 500, r.text
    return r


def layers(client, run_id: int) -> list[dict]:
    return client.get(f"/api/runs/{run_id}/layers").json()["layers"]


def test_create_is_idempotent_by_key_and_shows_the_kind(client):
    k = key()
    a = client.post(
        "/api/script-runs",
        json={
            "key": k,
            "name": "a",
            "config": {"lr": 0.1},
            "started_at": "2026-12-01T17:43:40.16+00:00",
        },
    )
    b = client.post("/api/script-runs", json={"key": k, "name": "other"})
    assert (a.status_code, b.status_code) == (201, 200)
    assert a.json()["id"] == b.json()["id"] and b.json()["created"] is False
    assert a.json()["kind"] == "script" and a.json()["status"] == "running"
    assert a.json()["started_at"].startswith("2026-12-01T17:43:40.16")
    listed = client.get("/api/runs").json()["data"]
    assert {r["id"]: r["kind"] for r in listed}[a.json()["id"]] == "script"
    scripts = client.get("/api/runs", params={"kind": "script"}).json()["data"]
    engines = client.get("/api/runs", params={"kind": "engine"}).json()["data"]
    assert a.json()["id"] in [r["id"] for r in scripts]
    assert {r["kind"] for r in scripts} == {"script"} and {r["kind"] for r in engines} <= {"engine"}
    bad = client.get("/api/runs", params={"kind": "nope"})
    assert bad.status_code == 422 and "kind" in bad.text


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": "x"}, "key"),
        ({"key": "short", "name": "x"}, "key"),
        ({"key": "k" * 40, "name": ""}, "name"),
        ({"key": "k" * 40, "name": "x", "tags": [""]}, "tags"),
        ({"key": "k" * 40, "name": "x", "status": "succeeded"}, "status"),
        ({"key": "k" * 40, "name": "x", "started_at": 1764600000}, "started_at"),
        ({"key": "k" * 40, "name": "x", "started_at": "2026-12-01T17:43:40"}, "started_at"),
    ],
)
def test_refuse_a_bad_create_naming_the_field(client, body, field):
    r = client.post("/api/script-runs", json=body)
    assert r.status_code == 422 and r.json()["detail"][0]["field"].startswith(field), r.text


def test_store_points_once_whatever_the_order_or_repetition(client):
    run_id, h = new_run(client)
    assert (
        post(client, run_id, h, [rows(40), rows(20)], layer_names=["a.bn", "b.bn"]).status_code
        == 200
    )
    assert post(client, run_id, h, [rows(10)]).status_code == 200  # earlier than stored
    assert post(client, run_id, h, [rows(40), rows(20)]).status_code == 200  # re-sent
    # one step twice in one batch: the last one wins, stored once
    assert post(client, run_id, h, [rows(60, base=5.0), rows(60)]).status_code == 200
    got = layers(client, run_id)
    assert [g["name"] for g in got] == ["a.bn", "b.bn"]
    assert got[0]["step"] == [10, 20, 40, 60] and got[1]["raw_points"] == 4
    assert got[1]["shift"] == [1 + s + 1 + 0.6 for s in (10, 20, 40, 60)]
    metrics = client.get(f"/api/runs/{run_id}/metrics").json()
    assert metrics["step"] == [10, 20, 40, 60] and metrics["train_loss"] == [11, 21, 41, 61]
    extra = client.get(f"/api/runs/{run_id}/extra-metrics").json()["metrics"]
    assert extra == {"my/metric": {"step": [10, 20, 40, 60], "value": [20, 40, 80, 120]}}
    assert client.get(f"/api/runs/{run_id}").json()["step"] == 60


def test_refuse_other_runs_and_wrong_keys_without_touching_them(client):
    a, ha = new_run(client, "a")
    b, hb = new_run(client, "b")
    post(client, b, hb, [rows(20)])
    before = layers(client, b)
    r = post(client, b, ha, [rows(20, base=99.0)])  # run a's key on run b
    assert r.status_code == 403 and "does not belong to run" in r.json()["detail"]
    assert str(a) not in r.json()["detail"]  # never says whose key it is
    r = post(client, b, {}, [rows(20)])
    assert r.status_code == 401 and "X-Bnlab-Run-Key" in r.json()["detail"]
    r = post(client, b, {"X-Bnlab-Run-Key": key()}, [rows(20)])
    assert r.status_code == 403
    for path in ("heartbeat", "finish"):
        r = client.post(f"/api/runs/{b}/{path}", json={"status": "failed"}, headers=ha)
        assert r.status_code == 403, r.text
    assert layers(client, b) == before
    assert client.get(f"/api/runs/{b}").json()["status"] == "running"
    assert post(client, 2**31 - 1, ha, [rows(20)]).status_code == 404


def test_refuse_a_wrong_api_token(client, monkeypatch):
    from backend.settings import settings

    run_id, h = new_run(client)
    monkeypatch.setattr(settings, "api_token", "s3cret")
    r = post(client, run_id, {**h, "Authorization": "Bearer nope"}, [rows(20)])
    assert r.status_code == 401 and "token" in r.json()["detail"]
    r = client.post("/api/script-runs", json={"key": key(), "name": "x"})
    assert r.status_code == 401
    ok = post(client, run_id, {**h, "Authorization": "Bearer s3cret"}, [rows(20)])
    assert ok.status_code == 200


def test_refuse_huge_batches_naming_the_limit(client, monkeypatch):
    from backend.api.routes import script_runs as routes
    from backend.crud import script_runs as crud

    run_id, h = new_run(client)
    r = post(client, run_id, h, [{"step": s} for s in range(crud.MAX_RECORDS + 1)])
    assert r.status_code == 413 and "records" in r.json()["detail"]
    monkeypatch.setattr(crud, "MAX_LAYER_ROWS", 10)
    r = post(client, run_id, h, [rows(s, n_layers=4) for s in range(3)])
    assert r.status_code == 413 and "layer points" in r.json()["detail"]
    monkeypatch.setattr(routes, "MAX_BODY", 1000)
    r = post(client, run_id, h, [rows(s) for s in range(20)])
    assert r.status_code == 413 and "bytes" in r.json()["detail"]
    assert layers(client, run_id) == []


@pytest.mark.parametrize(
    "raw, status, says",
    [
        (b'{"records":[{"step":1,"layers":[[NaN,1]]}]}', 400, "NaN"),
        (b'{"records":[{"step":1,"metrics":{"train_loss":1e999}}]}', 400, "JSON"),
        (b'{"records":[{"step":1,"metrics":{"train_loss":Infinity}}]}', 400, "JSON"),
        (b"not json", 400, "JSON"),
        (b"[]", 422, "body"),
        (b'{"records":[{"step":"1"}]}', 422, "records.0.step"),
        (b'{"records":[{"step":-5}]}', 422, "records.0.step"),
        (b'{"records":[{"step":4294967296}]}', 422, "records.0.step"),
        (b'{"records":[{"step":1,"layers":[[1,2,3]]}]}', 422, "records.0.layers.0"),
        (
            b'{"layer_keys":["shift","grad_norm"],"records":[{"step":1,"layers":[[1,"x"]]}]}',
            422,
            "records.0.layers.0.grad_norm",
        ),
        (b'{"layer_keys":["shift","nope"],"records":[]}', 422, "layer_keys"),
        (b'{"records":[{"step":1,"metrics":{"lr":true}}]}', 422, "records.0.metrics.lr"),
        (b'{"records":[{"step":1,"metrics":{"x\'); drop table runs;--":1}}]}', 422, "metrics"),
        (b'{"records":[], "extra": 1}', 422, "extra"),
    ],
)
def test_refuse_bad_values_naming_them(client, raw, status, says):
    run_id, h = new_run(client)
    r = client.post(
        f"/api/runs/{run_id}/points", content=raw, headers={**h, "Content-Type": "application/json"}
    )
    assert r.status_code == status, r.text
    assert says in r.text
    assert layers(client, run_id) == []


def test_store_nulls_and_extreme_finite_values(client):
    run_id, h = new_run(client)
    body = {
        "layer_keys": ["shift", "grad_norm"],
        "records": [
            {
                "step": 3,
                "metrics": {"train_loss": None, "val_acc": 1e308},
                "layers": [[None, 1e-300], None],
            }
        ],
    }
    r = client.post(
        f"/api/runs/{run_id}/points",
        content=orjson.dumps(body),
        headers={**h, "Content-Type": "application/json"},
    )
    assert r.status_code == 200 and r.json()["layer_rows"] == 1, r.text
    got = layers(client, run_id)
    assert len(got) == 1 and got[0]["grad_norm"] == [1e-300] and got[0]["shift"] == [None]
    m = client.get(f"/api/runs/{run_id}/metrics").json()
    assert m["val_acc"] == [1e308] and m["train_loss"] == [None]


def test_refuse_points_for_ended_and_engine_runs(client, session):
    run_id, h = new_run(client)
    post(client, run_id, h, [rows(20)])
    end = client.post(
        f"/api/runs/{run_id}/finish",
        json={"status": "succeeded", "summary": {"acc": 0.9}},
        headers=h,
    )
    assert end.status_code == 200 and end.json()["status"] == "succeeded"
    again = client.post(f"/api/runs/{run_id}/finish", json={"status": "succeeded"}, headers=h)
    assert again.status_code == 200  # the same end twice: a spool synced twice
    other = client.post(f"/api/runs/{run_id}/finish", json={"status": "failed"}, headers=h)
    assert other.status_code == 409 and "already ended (succeeded)" in other.json()["detail"]
    r = post(client, run_id, h, [rows(40)])
    assert r.status_code == 409 and "already ended (succeeded)" in r.json()["detail"]
    assert layers(client, run_id)[0]["step"] == [20]
    r = client.post(f"/api/runs/{run_id}/resume", json={"key": key()}, headers=h)
    assert r.status_code == 409 and "already succeeded" in r.json()["detail"]
    engine_run = create_random_run(session, status="running")
    r = client.post(f"/api/runs/{engine_run.id}/resume", json={"key": key()})
    assert r.status_code == 409 and "worker" in r.json()["detail"]
    r = client.post(f"/api/runs/{run_id}/retry")
    assert r.status_code == 409 and "script" in r.json()["detail"]


def test_crash_silent_runs_take_synced_points_and_resume(client, session):
    from backend.crud.script_runs import crash_silent_runs

    run_id, h = new_run(client)
    post(client, run_id, h, [rows(20)])
    crashed = crash_silent_runs(session=session, timeout_s=0.0)
    assert run_id in crashed
    run = client.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "crashed" and "sent nothing" in run["error"]
    assert post(client, run_id, h, [rows(40)]).status_code == 200  # a synced spool
    assert client.get(f"/api/runs/{run_id}").json()["status"] == "crashed"
    k2 = key()
    r = client.post(f"/api/runs/{run_id}/resume", json={"key": k2}, headers=h)  # proof: h
    assert r.status_code == 200 and r.json()["status"] == "running" and r.json()["attempt"] == 2
    assert r.json()["step"] == 40
    again = client.post(f"/api/runs/{run_id}/resume", json={"key": k2})  # a spool's resume line
    assert again.status_code == 200 and again.json()["attempt"] == 2
    post(client, run_id, {"X-Bnlab-Run-Key": k2}, [rows(60)])
    post(client, run_id, h, [rows(80)])  # the first process's key still opens it (bnlab sync)
    assert layers(client, run_id)[0]["step"] == [20, 40, 60, 80]


def columns_post(client, run_id: int, headers: dict, body: bytes):
    from bnlab.core.wire import MEDIA_TYPE

    r = client.post(
        f"/api/runs/{run_id}/points", content=body, headers={**headers, "Content-Type": MEDIA_TYPE}
    )
    assert r.status_code < 500, r.text
    return r


def test_store_the_columns_body_like_the_json_one(client):
    """The SDK's binary body: the same rows as JSON, NaN and infinity stored as null, a
    repeated (layer, step) stored once (the last), re-sent batches stored once."""
    from bnlab.core.wire import encode

    keys = list(LAYER_KEYS)
    a, ha = new_run(client, "json")
    b, hb = new_run(client, "columns")
    recs = [rows(40), rows(20), rows(40, base=3.0)]
    recs[1]["layers"][1][keys.index("shift")] = None
    post(client, a, ha, recs, layer_names=["x", "y"])
    body = encode(recs, keys, ["x", "y"])
    for _ in range(2):
        assert columns_post(client, b, hb, body).status_code == 200
    assert layers(client, a) == layers(client, b)
    m_a = client.get(f"/api/runs/{a}/metrics").json()
    assert m_a == client.get(f"/api/runs/{b}/metrics").json()
    got = layers(client, b)
    assert got[1]["step"] == [20, 40] and got[1]["shift"][0] is None
    assert got[0]["train_mean"][1] == 3.0 + 40  # the last row sent for step 40
    inf = [dict(r) for r in recs[:1]]
    inf[0]["layers"] = [[float("inf")] * len(keys), None]
    assert columns_post(client, b, hb, encode(inf, keys)).status_code == 200
    assert layers(client, b)[0]["grad_norm"][-1] is None


def test_refuse_a_bad_columns_body_naming_the_part(client):
    from bnlab.core.wire import encode

    run_id, h = new_run(client)
    good = encode([rows(20)], list(LAYER_KEYS))
    cases = [
        (good[:-8], 422, "expected"),
        (b"\x00", 422, "too short"),
        (b"\x05\x00\x00\x00{nope", 422, "header"),
        (
            encode([{"step": -1, "layers": [[1.0] * len(LAYER_KEYS)]}], list(LAYER_KEYS)),
            422,
            "step",
        ),
    ]
    for body, status, says in cases:
        r = columns_post(client, run_id, h, body)
        assert r.status_code == status and says in r.text, (body[:20], r.text)
    other, ho = new_run(client)
    assert columns_post(client, other, h, good).status_code == 403
    assert layers(client, run_id) == [] and layers(client, other) == []
