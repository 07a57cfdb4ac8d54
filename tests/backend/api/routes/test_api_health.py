"""GET /api/health: database, broker (real Redis) and live workers."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from backend import broker
from backend.settings import Settings, settings


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


# ---------------------------------------------------------------- disk and artifact store


def test_read_health_reports_the_data_disk(client, data_dir):
    """The data dir's filesystem: its free and total bytes (as the OS reports them) and the
    threshold, "ok" while there is room."""
    import shutil

    body = client.get("/api/health").json()
    (disk,) = [d for d in body["disks"] if "data dir" in d["used_for"]]
    usage = shutil.disk_usage(data_dir)
    assert disk["path"] == str(data_dir) and disk["total_bytes"] == usage.total
    assert abs(disk["free_bytes"] - usage.free) < 2**30  # other processes write meanwhile
    assert disk["min_free_bytes"] == settings.min_free_mb * 2**20
    assert disk["status"] == "ok" and body["status"] == "ok"
    assert body["artifacts"] == {"location": str(data_dir), "status": "ok"}


def test_read_health_degraded_below_the_free_space_threshold(client, data_dir, monkeypatch):
    """BNLAB_MIN_FREE_MB above the data disk's free space: "degraded" (still 200: reads and the
    runs already stored are served), the disk "low" with its figures."""
    import shutil

    free_mb = shutil.disk_usage(data_dir).free // 2**20
    monkeypatch.setattr(settings, "min_free_mb", free_mb + 10_000)
    res = client.get("/api/health")
    assert res.status_code == 200
    body = res.json()
    (disk,) = [d for d in body["disks"] if "data dir" in d["used_for"]]
    assert disk["status"] == "low" and disk["free_bytes"] < disk["min_free_bytes"]
    assert body["status"] == "degraded" and body["database"] == body["broker"] == "ok"


def test_read_health_checks_the_sqlite_files_own_disk(client, data_dir, monkeypatch, tmp_path):
    """A SQLite file on another filesystem (a tmpfs) is checked too: low there alone is
    degraded, and the data disk stays ok."""
    import os
    import shutil

    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(data_dir).st_dev:
        pytest.skip("no second filesystem at /dev/shm")
    folder = Path(tempfile.mkdtemp(dir=shm))
    try:
        monkeypatch.setattr(settings, "database_url_", f"sqlite:///{folder / 'bnlab.db'}")
        shm_free = shutil.disk_usage(folder).free // 2**20
        data_free = shutil.disk_usage(data_dir).free // 2**20
        if shm_free + 100 >= data_free:
            pytest.skip("the tmpfs is not smaller than the data disk")
        monkeypatch.setattr(settings, "min_free_mb", shm_free + 50)
        body = client.get("/api/health").json()
        by_role = {role: d for d in body["disks"] for role in d["used_for"]}
        assert by_role["sqlite"]["path"] == str(folder) and by_role["sqlite"]["status"] == "low"
        assert by_role["data dir"]["status"] == "ok" and body["status"] == "degraded"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_read_health_degraded_when_the_artifact_store_is_unreachable(client, monkeypatch):
    """BNLAB_ARTIFACTS_URL on an S3 endpoint where nothing listens: "error", degraded."""
    from backend import artifacts
    from tests.utils.net import free_port

    monkeypatch.setattr(settings, "artifacts_url", "s3://bnlab-health/p")
    monkeypatch.setattr(settings, "s3_endpoint_url", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(artifacts, "_stores", {})
    body = client.get("/api/health").json()
    assert body["artifacts"]["location"] == "s3://bnlab-health/p"
    assert body["artifacts"]["status"].startswith("error"), body["artifacts"]
    assert body["status"] == "degraded"


def test_read_health_artifact_store_ok(client, monkeypatch):
    """A real S3 server (SeaweedFS) with the bucket: "ok"."""
    from backend import artifacts
    from tests.utils.s3server import SeaweedS3

    server = SeaweedS3()
    if not server.weed:
        pytest.skip("SeaweedFS (weed) is not installed")
    server.start()
    try:
        for key, value in server.env("p").items():
            monkeypatch.setattr(settings, key.removeprefix("BNLAB_").lower(), value)
        monkeypatch.setattr(artifacts, "_stores", {})
        body = client.get("/api/health").json()
        assert body["artifacts"]["status"] == "ok", body["artifacts"]
        assert body["status"] == "ok"
    finally:
        server.stop()
