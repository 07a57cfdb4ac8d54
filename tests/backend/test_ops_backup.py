"""`bnlab backup DIR` and `bnlab restore DIR` (issue 27 item 5), run as the real commands:
PostgreSQL (pg_dump / pg_restore) with a SeaweedFS S3 bucket, and SQLite (the online backup
API) with the data dir. A restore into a fresh database and store holds every row and every
file, and a real API on it serves the runs and their exports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from backend.crud.metrics import pack_runs
from backend.db.models import Run, SeriesPack
from tests.backend.ops_stand import (
    KINDS,
    ROOT,
    Deployment,
    deployment,
    files,
    populate,
    s3_server,
    tables,
)
from tests.utils.net import free_port
from tests.worker.procs import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(params=KINDS)
def pair(request, tmp_path: Path) -> Iterator[tuple[Deployment, Deployment]]:
    """A populated deployment and a fresh one of the same kind (its own database and store)."""
    with ExitStack() as stack:
        s3 = stack.enter_context(s3_server()) if request.param.endswith("s3") else None
        source = stack.enter_context(deployment(request.param, tmp_path / "src", s3, "src"))
        target = stack.enter_context(deployment(request.param, tmp_path / "dst", s3, "dst"))
        yield source, target


@pytest.fixture
def api_on(tmp_path: Path) -> Iterator:
    """Start a real API process on a deployment; stopped at teardown."""
    procs: list[subprocess.Popen] = []

    def start(d: Deployment) -> str:
        port = free_port()
        log = (tmp_path / f"api-{port}.log").open("wb")
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "backend.api.main:create_app"]
        proc = subprocess.Popen(
            [*cmd, "--host", "127.0.0.1", "--port", str(port)],
            env=d.env,
            cwd=str(ROOT),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert proc.poll() is None, (tmp_path / f"api-{port}.log").read_text()
            try:
                return httpx.get(f"{base}/api/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 90, "the API to answer", every=0.3)
        return base

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_restore_into_a_fresh_deployment_intact(
    pair: tuple[Deployment, Deployment], tmp_path: Path, api_on
) -> None:
    """Breaks: the deployment is lost; a backup taken while it held runs of every status (their
    metric and layer series, packed series, exports, checkpoints, uploads, sweeps) is restored
    into a fresh database and a fresh store (PostgreSQL: already migrated by a fresh stack).
    Must hold: every row of every table and every file's bytes come back; a real API on the
    restored deployment lists the runs and serves a run's export byte for byte."""
    source, target = pair
    ids = populate(source)
    with source.sessions() as s:
        pack_runs(session=s, runs=[s.get(Run, ids["old_succeeded"])])
        packed = s.query(SeriesPack).count()
    assert packed or source.url.startswith("sqlite")  # packs are PostgreSQL's
    folder = tmp_path / "backup"

    made = source.bnlab("backup", str(folder))
    assert made.returncode == 0, made.stderr
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["counts"]["runs"] == len(tables(source)["runs"])
    assert set(manifest["files"]) == source.keys()

    done = target.bnlab("restore", str(folder))
    assert done.returncode == 0, done.stderr
    assert tables(target) == tables(source)
    assert files(target) == files(source)

    base = api_on(target)
    listed = httpx.get(f"{base}/api/runs", params={"limit": 100}, timeout=10).json()
    assert {r["id"] for r in listed["data"]} == {r[0] for r in tables(source)["runs"]}
    run_id = ids["old_succeeded"]
    export = httpx.get(f"{base}/api/runs/{run_id}/export", params={"format": "npz"}, timeout=10)
    assert export.status_code == 200
    assert export.content == files(source)[f"exports/run-{run_id}/model.npz"]

    again = target.bnlab("restore", str(folder))
    assert again.returncode == 1 and "not empty" in again.stderr, again.stderr
    assert "Traceback" not in again.stderr


def test_refuse_a_damaged_backup_before_touching_anything(tmp_path: Path) -> None:
    """Breaks: one file of a backup is changed after it was taken.
    Must hold: restore names the file, exits 1 and leaves the target without a database."""
    with deployment("sqlite-folder", tmp_path / "src") as source:
        populate(source)
        folder = tmp_path / "backup"
        assert source.bnlab("backup", str(folder)).returncode == 0
    victim = next((folder / "artifacts" / "exports").rglob("model.npz"))
    victim.write_bytes(victim.read_bytes() + b"!")
    target_dir = tmp_path / "dst"
    env = {**os.environ, "BNLAB_DATA_DIR": str(target_dir)}
    env.pop("BNLAB_DATABASE_URL", None)
    out = subprocess.run(
        [sys.executable, "-m", "bnlab.cli", "restore", str(folder)],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1 and "damaged" in out.stderr and victim.name in out.stderr
    assert not (target_dir / "bnlab.db").exists()
