"""Workers on other hosts, no shared disk: everything a run needs or makes travels through the
S3 artifact store (a real SeaweedFS S3 gateway on a loopback port).

A real API process (uvicorn, its own data dir) and real Celery workers, each with a data dir of
its own that nobody else reads. A worker is SIGKILLed after its first epoch checkpoint reached
the store; a new worker with an empty data dir (another host) resumes the run from that object,
and the export it publishes downloads through the API. An uploaded dataset, stored by the API,
trains on a worker that never saw the API's disk.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.utils.s3server import SeaweedS3
from tests.worker.procs import (
    ROOT,
    Stack,
    WorkerProc,
    free_port,
    make_stack,
    slow_config,
    tiny_config,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def s3() -> Iterator[SeaweedS3]:
    server = SeaweedS3()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cluster(tmp_path, s3) -> Iterator[tuple[Stack, str]]:
    """PostgreSQL + a private Redis + S3, and a real API process on its own data dir."""
    gen = make_stack("pg_redis", tmp_path, private_redis=True)
    stack = next(gen)
    stack.env.update(s3.env("cluster"))
    api_dir = tmp_path / "api-host"
    port = free_port()
    env = {**stack.env, "BNLAB_DATA_DIR": str(api_dir)}
    log = (tmp_path / "api.log").open("wb")
    api = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "backend.api.main:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        cwd=str(ROOT),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 60, "the API to answer")
        stack.api_dir = api_dir  # type: ignore[attr-defined]
        yield stack, url
    finally:
        api.terminate()
        api.wait(20)
        log.close()
        gen.close()


def worker_on_host(stack: Stack, host_dir: Path) -> WorkerProc:
    """A Celery worker whose data dir is `host_dir` (what its host has on disk)."""
    host_dir.mkdir(parents=True, exist_ok=True)
    w = WorkerProc({**stack.env, "BNLAB_DATA_DIR": str(host_dir)}, host_dir / "worker.log")
    stack.workers.append(w)
    return w


def test_resume_on_another_host_from_the_object_store(cluster, s3, tmp_path) -> None:
    stack, url = cluster
    client = s3.client()
    cfg = slow_config(name="remote", train__epochs=3)
    run_id = stack.create_run(cfg)
    key = f"cluster/checkpoints/run-{run_id}.pt"

    def stored() -> bool:
        return any(
            o["Key"] == key
            for o in client.list_objects_v2(Bucket=s3.bucket, Prefix=key).get("Contents", [])
        )

    first = worker_on_host(stack, tmp_path / "host-a")
    wait_for(stored, 180, "the first epoch checkpoint in the object store")
    first.kill9()
    killed_at = stack.run(run_id)
    assert killed_at.status == "running" and killed_at.attempt == 1
    total_steps = round(killed_at.step / killed_at.progress)

    host_b = tmp_path / "host-b"  # empty: no checkpoint on its disk
    worker_on_host(stack, host_b)
    seen: list[int] = []

    def done() -> bool:
        run = stack.run(run_id)
        if run.attempt == 2 and run.status == "running":
            seen.append(run.step)
        return run.status not in ("queued", "running")

    wait_for(done, 300, "the run to end on host b (the API's reconciler requeues it)", every=0.3)
    run = stack.run(run_id)
    assert (run.status, run.attempt) == ("succeeded", 2), (run.status, run.error)
    log_b = (host_b / "worker.log").read_text(errors="replace")
    assert "resuming from the object store's checkpoint" in log_b
    # Restarted from step 0, attempt 2 would have reported steps inside the first epoch.
    assert seen and min(seen) >= total_steps // cfg["train"]["epochs"], seen[:5]
    # The checkpoint is gone from the store once the run ended; the export is there.
    assert not stored()
    api_dir: Path = stack.api_dir  # type: ignore[attr-defined]
    assert not (api_dir / "exports" / f"run-{run_id}").exists()  # never written by a worker
    resp = httpx.get(f"{url}/runs/{run_id}/export", params={"format": "npz"}, timeout=30)
    assert resp.status_code == 200, resp.text
    obj = client.get_object(Bucket=s3.bucket, Key=f"cluster/exports/run-{run_id}/model.npz")
    assert resp.content == obj["Body"].read()
    assert len(np.load(io.BytesIO(resp.content)).files) > 0


def test_uploaded_dataset_trains_on_a_worker_without_the_api_disk(cluster, tmp_path) -> None:
    stack, url = cluster
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    buf = io.BytesIO()
    np.savez(buf, X=x, y=y)
    resp = httpx.post(f"{url}/datasets", files={"file": ("d.npz", buf.getvalue())}, timeout=30)
    assert resp.status_code == 201, resp.text
    upload_id = resp.json()["upload_id"]
    cfg = tiny_config(name="uploaded", dataset={"name": "upload", "upload_id": upload_id})
    run_id = stack.create_run(cfg)
    host = tmp_path / "host-c"
    worker_on_host(stack, host)
    run = stack.wait_status(run_id, timeout=180)
    assert run.status == "succeeded", run.error
    assert (host / "uploads" / f"{upload_id}.npz").is_file()  # fetched from the store
