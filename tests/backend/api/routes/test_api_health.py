"""GET /api/health: database, broker (real Redis) and live workers."""

from __future__ import annotations

import time

from backend import broker
from backend.settings import Settings


def test_read_health_all_ok(client):
    """With PostgreSQL and Redis up, both report ok and workers is a list."""
    body = client.get("/api/health").json()
    assert (body["status"], body["database"], body["broker"]) == ("ok", "ok", "ok")
    assert isinstance(body["workers"], list)


def test_read_health_broker_down_fast(client, monkeypatch):
    """A broker nobody listens on is reported as an error within a few seconds."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = broker.make_celery(Settings(BNLAB_BROKER_URL=f"redis://127.0.0.1:{port}/1"))
    monkeypatch.setattr(broker, "celery_app", dead)
    start = time.monotonic()
    body = client.get("/api/health").json()
    assert body["broker"].startswith("error") and body["status"] == "degraded"
    assert body["database"] == "ok"
    assert time.monotonic() - start < 10
