"""Error handling: an unreachable database is a 503 with a clear message, never a 500 or a hang."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from backend.api.deps import get_session
from backend.api.main import create_app
from tests.conftest import free_port_url


@pytest.fixture
def dead_db_client():
    """The app with sessions on a PostgreSQL port where nothing listens."""
    from sqlalchemy.orm import sessionmaker

    from backend.db.session import make_engine

    engine = make_engine(free_port_url())
    maker = sessionmaker(bind=engine)
    app = create_app()

    def dead_session():
        with maker() as s:
            yield s

    app.dependency_overrides[get_session] = dead_session
    yield TestClient(app, raise_server_exceptions=False)
    engine.dispose()


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/api/runs"),
        ("GET", "/api/runs/1"),
        ("GET", "/api/runs/1/layers"),
        ("POST", "/api/runs"),
    ],
)
def test_database_down_is_503(dead_db_client, method, path):
    """Reads and writes answer 503 "database unavailable, retry shortly" (the URL's
    connect_timeout bounds the wait; no wall-clock bound here: a loaded machine would fail it)."""
    res = dead_db_client.request(method, path, json={} if method == "POST" else None)
    assert res.status_code == 503, res.text
    assert res.json() == {"detail": "database unavailable, retry shortly"}


def test_health_reports_database_down(dead_db_client):
    """/api/health answers 503 (not ready: an orchestrator takes the replica out) and says the
    database is not ok."""
    res = dead_db_client.get("/api/health")
    assert res.status_code == 503
    body = res.json()
    assert body["database"].startswith("error") and body["status"] == "unavailable"


def test_locked_sqlite_is_named_not_called_down():
    """SQLite's 'database is locked' past the busy timeout is a 503 that says so (with
    Retry-After), not 'database unavailable'."""
    import asyncio
    import json as _json

    from sqlalchemy.exc import OperationalError

    from backend.api.errors import on_db_down

    locked = OperationalError("INSERT ...", {}, Exception("database is locked"))
    res = asyncio.run(on_db_down(None, locked))
    assert res.status_code == 503 and res.headers["retry-after"] == "5"
    assert "locked" in _json.loads(res.body)["detail"]
    down = asyncio.run(on_db_down(None, OperationalError("SELECT 1", {}, Exception("refused"))))
    assert _json.loads(down.body)["detail"] == "database unavailable, retry shortly"
