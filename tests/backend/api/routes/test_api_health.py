"""GET /api/health: database, broker (real Redis) and live workers."""

from __future__ import annotations

from backend import broker
from backend.settings import Settings


def test_read_health_all_ok(client):
    """With PostgreSQL and Redis up, both report ok and workers is a list."""
    body = client.get("/api/health").json()
    assert (body["status"], body["database"], body["broker"]) == ("ok", "ok", "ok")
    assert isinstance(body["workers"], list)


def test_read_health_broker_down_fast(client, monkeypatch):
    """A broker nobody listens on is reported as an error (the health check's own timeouts bound
    the wait; no wall-clock bound asserted here)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = broker.make_celery(Settings(BNLAB_BROKER_URL=f"redis://127.0.0.1:{port}/1"))
    monkeypatch.setattr(broker, "celery_app", dead)
    body = client.get("/api/health").json()
    assert body["broker"].startswith("error") and body["status"] == "degraded"
    assert body["database"] == "ok"


def test_read_health_lists_live_workers_only(client, session):
    """A worker seen just now is listed; one silent past the heartbeat timeout is not."""
    from datetime import timedelta

    from backend.db.models import Worker, utcnow

    session.add_all(
        [
            Worker(id="h:1:live", host="h", pid=1, last_seen=utcnow()),
            Worker(id="h:2:gone", host="h", pid=2, last_seen=utcnow() - timedelta(hours=1)),
        ]
    )
    session.commit()
    ids = [w["id"] for w in client.get("/api/health").json()["workers"]]
    assert "h:1:live" in ids and "h:2:gone" not in ids
