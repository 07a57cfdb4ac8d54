"""A real `bnlab serve` for the SDK tests: SQLite + the embedded broker, or PostgreSQL + Redis;
on a port that survives a kill -9 and a restart (the SDK keeps talking to the same URL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.utils.net import free_port
from tests.utils.services import flush_redis, worker_redis

REPO = Path(__file__).resolve().parents[3]  # the repository root (tests/bnlab/sdk/../../..)


@dataclass
class Server:
    data_dir: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "serve.log"

    def start(self, timeout_s: float = 60.0) -> Server:
        cmd = [
            sys.executable,
            "-c",
            "from bnlab.cli import app; app()",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--workers",
            "0",
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bnlab serve exited:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"bnlab serve did not answer in {timeout_s}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the server's process group (what a crash or an OOM kill does)."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill()
            self.proc = None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def make_server(
    data_dir: Path,
    *,
    database_url: str | None = None,
    broker_url: str | None = None,
    **settings: str,
) -> Server:
    """A server (not started) with a private data dir; settings are BNLAB_* overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BNLAB_")}
    env.update(BNLAB_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    if database_url:
        env["BNLAB_DATABASE_URL"] = database_url
    if broker_url:
        env["BNLAB_BROKER_URL"] = broker_url
    env.update({f"BNLAB_{k.upper()}": v for k, v in settings.items()})
    data_dir.mkdir(parents=True, exist_ok=True)
    return Server(data_dir=data_dir, port=free_port(), env=env)


@contextmanager
def postgres_server(data_dir: Path, name: str, redis_db: int) -> Iterator[Server]:
    """A started server on its own scratch PostgreSQL database `name` (dropped afterwards) and
    Redis database `redis_db` (one per test module, so modules never share a queue) unless the
    environment names the test Redis (tests/utils/services.py)."""
    from tests.conftest import _create_database, _drop_database

    broker_url = worker_redis(redis_db)
    flush_redis(broker_url)  # nothing another module left queued reaches this server's worker
    server = make_server(
        data_dir,
        database_url=_create_database(name),
        broker_url=broker_url,
    ).start()
    try:
        yield server
    finally:
        server.stop()
        flush_redis(broker_url)
        _drop_database(name)
