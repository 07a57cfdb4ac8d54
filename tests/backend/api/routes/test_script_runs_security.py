"""Regression tests for the script-run holes an outside attack found (issue 21, items 1-4, 10),
on PostgreSQL (the savepoint test session) and on the embedded SQLite file, through the API.

Each fails on the code before the fix: a stranger with only the API token took over a run by
resuming it, a live run was resumed under its client, /points read a 64 MB body before checking
the key, concurrent batches had no memory bound, SQLite's "database is locked" was reported as
"database unavailable", a malformed body was blamed on NaN, a 20 MB summary was accepted and
returned by every lean run list, and a NUL in layer_names was stored.
"""

from __future__ import annotations

import secrets
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text, update
from sqlalchemy.orm import sessionmaker

from backend.api import limits
from backend.api.deps import get_session
from backend.api.main import create_app
from backend.crud.run_list import LEAN_SUMMARY_BYTES
from backend.db.migrate import upgrade
from backend.db.models import Run, utcnow
from backend.db.session import make_engine
from bnlab.core.registry import LAYER_KEYS
from bnlab.core.schema.script_runs import MAX_CONFIG_BYTES, MAX_SUMMARY_BYTES

BACKENDS = ["postgresql", "sqlite"]


def key() -> str:
    return secrets.token_urlsafe(32)


def rows(step: int, loss: float, n_layers: int = 2) -> dict:
    return {
        "step": step,
        "metrics": {"train_loss": loss},
        "layers": [[loss + i + k / 10 for k in range(len(LAYER_KEYS))] for i in range(n_layers)],
    }


class Api:
    """One backend: a TestClient and a way to touch the database behind it."""

    def __init__(self, client: TestClient, sessions) -> None:  # noqa: ANN001
        self.client, self.sessions = client, sessions

    def new_run(self, name: str = "mine", **extra) -> tuple[int, dict]:
        k = key()
        r = self.client.post("/api/script-runs", json={"key": k, "name": name, **extra})
        assert r.status_code == 201, r.text
        return r.json()["id"], {"X-Bnlab-Run-Key": k}

    def points(self, run_id: int, headers: dict, records: list, **body) -> httpx.Response:
        r = self.client.post(
            f"/api/runs/{run_id}/points", json={"records": records, **body}, headers=headers
        )
        assert r.status_code < 500 or r.status_code == 503, r.text
        return r

    def silent_for(self, run_id: int, seconds: float) -> None:
        """The run's client was last heard from `seconds` ago (a dead process)."""
        with self.sessions() as s:
            s.execute(
                update(Run)
                .where(Run.id == run_id)
                .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
            )
            s.commit()

    def run(self, run_id: int) -> dict:
        return self.client.get(f"/api/runs/{run_id}").json()

    def losses(self, run_id: int) -> list:
        return self.client.get(f"/api/runs/{run_id}/metrics").json()["train_loss"]


@pytest.fixture
def sqlite_api(tmp_path, api_db) -> Iterator[Api]:
    url = f"sqlite:///{tmp_path / 'bnlab.db'}"
    upgrade(url)
    engine = make_engine(url)
    maker = sessionmaker(bind=engine, expire_on_commit=False)
    app = create_app()

    def session():
        with maker() as s:
            yield s

    app.dependency_overrides[get_session] = session
    yield Api(TestClient(app), maker)
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def api(request) -> Api:
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_api")
    session = request.getfixturevalue("session")

    class Shared:  # the test's savepoint session, the one the app's requests use
        def __enter__(self):
            return session

        def __exit__(self, *exc) -> None:
            pass

    return Api(request.getfixturevalue("client"), Shared)


# ----------------------------------------------------------------------------- 1. takeover


def test_resume_needs_one_of_the_runs_keys(api):
    """The attack: only the API token, resume a stranger's run, overwrite its points, end it."""
    victim, vh = api.new_run("victim")
    assert api.points(victim, vh, [rows(20, 7.0)]).status_code == 200
    _, other = api.new_run("attacker's own")
    api.silent_for(victim, 3600)  # not even a live client protects it: the key does
    stolen = key()
    for headers, code in (({}, 401), (other, 403), ({"X-Bnlab-Run-Key": key()}, 403)):
        r = api.client.post(f"/api/runs/{victim}/resume", json={"key": stolen}, headers=headers)
        assert r.status_code == code, r.text
        assert ("X-Bnlab-Run-Key" in r.json()["detail"]) if code == 401 else True
    hijack = {"X-Bnlab-Run-Key": stolen}
    assert api.points(victim, hijack, [rows(20, 666.0)]).status_code == 403
    end = api.client.post(
        f"/api/runs/{victim}/finish", json={"status": "failed", "error": "hijacked"}, headers=hijack
    )
    assert end.status_code == 403
    assert api.losses(victim) == [7.0]
    got = api.run(victim)
    assert (got["status"], got["attempt"], got["error"]) == ("running", 1, None)


def test_resume_with_a_key_continues_the_run_and_a_resent_line_is_a_noop(api):
    run_id, h = api.new_run()
    api.points(run_id, h, [rows(20, 7.0)])
    api.silent_for(run_id, 3600)
    new = key()
    r = api.client.post(f"/api/runs/{run_id}/resume", json={"key": new}, headers=h)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["attempt"]) == ("running", 2)
    # the spool's resume line sent again (bnlab sync): the new key is the run's: no proof needed
    again = api.client.post(f"/api/runs/{run_id}/resume", json={"key": new})
    assert again.status_code == 200 and again.json()["attempt"] == 2
    assert api.points(run_id, {"X-Bnlab-Run-Key": new}, [rows(40, 6.0)]).status_code == 200
    assert api.losses(run_id) == [7.0, 6.0]


def test_a_live_run_is_not_resumed_even_with_its_key(api):
    run_id, h = api.new_run()
    api.points(run_id, h, [rows(20, 7.0)])  # points are a heartbeat: alive now
    r = api.client.post(f"/api/runs/{run_id}/resume", json={"key": key()}, headers=h)
    assert r.status_code == 409, r.text
    assert "alive" in r.json()["detail"] and int(r.headers["retry-after"]) >= 1
    assert api.run(run_id)["attempt"] == 1
    api.silent_for(run_id, 60)  # the client died: a minute of silence
    r = api.client.post(f"/api/runs/{run_id}/resume", json={"key": key()}, headers=h)
    assert r.status_code == 200 and r.json()["attempt"] == 2


# ----------------------------------------------------------------------------- 2. messages


def test_a_body_that_is_not_json_is_named_for_what_it_is(api):
    run_id, h = api.new_run()
    torn = b'{"records": [{"step": 1, "metrics": {"train_loss": 1.5}}, {"step": 2, "metr'
    r = api.client.post(
        f"/api/runs/{run_id}/points",
        content=torn,
        headers={**h, "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert "NaN" not in detail and "line 1 column" in detail and "byte" in detail, detail
    nan = b'{"records": [{"step": 1, "metrics": {"train_loss": NaN}}]}'
    r = api.client.post(
        f"/api/runs/{run_id}/points", content=nan, headers={**h, "Content-Type": "application/json"}
    )
    assert r.status_code == 400 and "NaN" in r.json()["detail"]


# ----------------------------------------------------------------------------- 3. ingest bounds


def test_a_full_ingest_budget_is_a_503_with_retry_after_and_its_cause(api, monkeypatch):
    budget = limits.IngestBudget(capacity=2**20, wait_s=0.2)
    monkeypatch.setattr(limits, "ingest_budget", budget)
    run_id, h = api.new_run()
    assert budget._take(2**20)  # another batch holds the whole budget
    r = api.points(run_id, h, [rows(20, 7.0)])
    assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
    assert "memory bound" in r.json()["detail"]
    budget._give(2**20)
    assert api.points(run_id, h, [rows(20, 7.0)]).status_code == 200
    assert budget.used == 0  # every hold given back


def test_a_stranger_takes_no_room_in_the_budget(api, monkeypatch):
    budget = limits.IngestBudget(capacity=2**20, wait_s=0.2)
    monkeypatch.setattr(limits, "ingest_budget", budget)
    run_id, _ = api.new_run()
    r = api.points(run_id, {"X-Bnlab-Run-Key": key()}, [rows(20, 7.0)])
    assert r.status_code == 403 and budget.peak == 0


def test_sqlite_ingest_waits_for_the_one_writer_then_says_so(sqlite_api, monkeypatch):
    writer = limits.SqliteWriter(wait_s=0.2)
    monkeypatch.setattr(limits, "sqlite_writer", writer)
    run_id, h = sqlite_api.new_run()
    writer._lock.acquire()  # another ingest is writing
    try:
        r = sqlite_api.points(run_id, h, [rows(20, 7.0)])
    finally:
        writer._lock.release()
    assert r.status_code == 503 and "one writer" in r.json()["detail"]
    assert int(r.headers["retry-after"]) >= 1
    assert sqlite_api.points(run_id, h, [rows(20, 7.0)]).status_code == 200


def test_sqlite_locked_by_another_process_is_named_not_unavailable(tmp_path, api_db):
    """A worker process holding the SQLite file's write lock past the busy timeout."""
    url = f"sqlite:///{tmp_path / 'bnlab.db'}"
    upgrade(url)
    engine = make_engine(url)

    @event.listens_for(engine, "connect")
    def _short_wait(dbapi_conn, _record):  # noqa: ANN001 - after make_engine's 30 s
        dbapi_conn.execute("PRAGMA busy_timeout=200")

    maker = sessionmaker(bind=engine, expire_on_commit=False)
    app = create_app()

    def session():
        with maker() as s:
            yield s

    app.dependency_overrides[get_session] = session
    api = Api(TestClient(app), maker)
    run_id, h = api.new_run()
    holder = make_engine(url).connect()
    holder.exec_driver_sql("BEGIN IMMEDIATE")  # the other writer
    holder.execute(text("UPDATE runs SET name = name WHERE id = :i"), {"i": run_id})
    try:
        r = api.points(run_id, h, [rows(20, 7.0)])
    finally:
        holder.rollback()
        holder.close()
    assert r.status_code == 503, r.text
    detail = r.json()["detail"]
    assert "locked" in detail and "unavailable" not in detail and r.headers["retry-after"]
    assert api.points(run_id, h, [rows(20, 7.0)]).status_code == 200
    engine.dispose()


def test_points_check_the_key_before_reading_the_body(server):
    """A stranger announcing 60 MB is refused at once: the server never waits for the body."""
    with httpx.Client(base_url=server, timeout=30) as c:
        r = c.post("/api/script-runs", json={"key": key(), "name": "victim"})
        run_id = r.json()["id"]
    host, port = server.removeprefix("http://").split(":")
    head = (
        f"POST /api/runs/{run_id}/points HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {60 * 2**20}\r\n"
        f"X-Bnlab-Run-Key: {key()}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head + b'{"records": [')  # and nothing more: the old server waited for it
        try:
            answer = s.recv(4096)
        except TimeoutError:
            answer = b"(no answer in 30 s: the server was waiting for the body)"
    assert answer.startswith(b"HTTP/1.1 403"), answer[:200]


def test_concurrent_batches_stay_within_the_budget(server, monkeypatch):
    """Six clients post ~3 MB batches at once to a real server whose budget holds two: each
    is stored, and the bodies held at once never exceed the budget."""
    budget = limits.IngestBudget(capacity=7 * 2**20, wait_s=120)
    monkeypatch.setattr(limits, "ingest_budget", budget)
    bodies, runs = [], []
    with httpx.Client(base_url=server, timeout=120) as c:
        for n in range(6):
            k = key()
            run_id = c.post("/api/script-runs", json={"key": k, "name": f"load {n}"}).json()["id"]
            records = [rows(s, float(n), n_layers=40) for s in range(1, 400)]
            bodies.append(orjson.dumps({"records": records}))
            runs.append((run_id, k))
    assert all(2**20 < len(b) < 3.5 * 2**20 for b in bodies)
    codes: list[int] = []

    def send(i: int) -> None:
        run_id, k = runs[i]
        with httpx.Client(base_url=server, timeout=120) as c:
            r = c.post(
                f"/api/runs/{run_id}/points",
                content=bodies[i],
                headers={"X-Bnlab-Run-Key": k, "Content-Type": "application/json"},
            )
        codes.append(r.status_code)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert codes == [200] * 6
    assert 0 < budget.peak <= budget.capacity and budget.used == 0
    with httpx.Client(base_url=server, timeout=60) as c:
        for run_id, _ in runs:
            assert len(c.get(f"/api/runs/{run_id}/metrics").json()["step"]) == 399


# ----------------------------------------------------------------------------- 4. summary


def test_summary_is_capped_naming_it(api):
    run_id, h = api.new_run()
    big = {"blob": "x" * (MAX_SUMMARY_BYTES - 8)}  # just over the cap as JSON
    r = api.client.post(
        f"/api/runs/{run_id}/finish", json={"status": "succeeded", "summary": big}, headers=h
    )
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "summary", r.text[:300]
    huge = orjson.dumps({"status": "succeeded", "summary": {"blob": "x" * 20 * 2**20}})
    r = api.client.post(
        f"/api/runs/{run_id}/finish",
        content=huge,
        headers={**h, "Content-Type": "application/json"},
    )
    assert r.status_code == 413 and "summary" in r.json()["detail"]
    assert api.run(run_id)["status"] == "running"
    fits = {"blob": "x" * (MAX_SUMMARY_BYTES - 100)}
    r = api.client.post(
        f"/api/runs/{run_id}/finish", json={"status": "succeeded", "summary": fits}, headers=h
    )
    assert r.status_code == 200


def test_config_is_capped_naming_it(api):
    r = api.client.post(
        "/api/script-runs",
        json={"key": key(), "name": "big", "config": {"blob": "x" * MAX_CONFIG_BYTES}},
    )
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "config"


def test_the_schema_states_the_caps(api):
    spec = api.client.get("/openapi.json").json()["components"]["schemas"]
    summary = spec["ScriptRunFinish"]["properties"]["summary"]
    assert summary["x-max-json-bytes"] == MAX_SUMMARY_BYTES
    assert str(MAX_SUMMARY_BYTES) in summary["description"]
    config = spec["ScriptRunCreate"]["properties"]["config"]
    assert config["x-max-json-bytes"] == MAX_CONFIG_BYTES


def test_the_lean_run_list_stays_lean_whatever_a_run_stores(api):
    run_id, h = api.new_run("wide")
    wide = {f"layer{i:05d}.bn": float(i) for i in range(60_000)}  # ~1.4 MB of scalars
    wide["test_acc_eval"] = 0.5
    summary = {"acc": 0.9, "note": "ok", "text": "y" * 50_000, "per_layer": wide}
    r = api.client.post(
        f"/api/runs/{run_id}/finish", json={"status": "succeeded", "summary": summary}, headers=h
    )
    assert r.status_code == 200, r.text
    # an engine run's summary is written by its worker, not /finish: no cap there
    with api.sessions() as s:
        s.execute(update(Run).where(Run.id == run_id).values(summary={**summary, "more": wide}))
        s.commit()
    page = api.client.get("/api/runs", params={"lean": 1, "ids": str(run_id)})
    got = page.json()["data"][0]["summary"]
    assert got == {"acc": 0.9, "note": "ok"}
    assert len(orjson.dumps(got)) <= LEAN_SUMMARY_BYTES
    full = api.client.get(f"/api/runs/{run_id}").json()["summary"]
    assert full["per_layer"]["test_acc_eval"] == 0.5  # the run itself keeps all of it


# ----------------------------------------------------------------------------- 10. NUL


def test_nul_in_layer_names_is_refused_naming_it(api):
    run_id, h = api.new_run()
    names = ["bn1", "bn2", "b\x00n3"]
    r = api.points(run_id, h, [rows(20, 1.0, n_layers=3)], layer_names=names)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] == "layer_names.2"
    from bnlab.core.wire import MEDIA_TYPE, encode

    body = encode([rows(20, 1.0, n_layers=3)], list(LAYER_KEYS), layer_names=names)
    r = api.client.post(
        f"/api/runs/{run_id}/points", content=body, headers={**h, "Content-Type": MEDIA_TYPE}
    )
    assert r.status_code == 422 and "layer_names" in r.text
    assert api.run(run_id)["layer_names"] is None
    created = api.client.post(
        "/api/script-runs", json={"key": key(), "name": "n", "layer_names": names}
    )
    assert created.status_code == 422 and "layer_names" in created.text
