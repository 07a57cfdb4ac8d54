"""One reconciler at a time across API replicas (issue 27 item 5): two real uvicorn API
processes on one PostgreSQL database; only the holder of the advisory lock reconciles, and when
its process is killed the other one takes over."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from backend.db.models import utcnow
from backend.reconcile import LEADER_LOCK, Leadership
from tests.utils.net import free_port
from tests.utils.runs import add_bare_run
from tests.worker.procs import PrivateRedis, scratch_pg_database, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# Every logger at INFO to stderr: the reconciler says when it leads and what it repaired.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(name)s %(levelname)s %(message)s"}},
    "handlers": {"err": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"level": "INFO", "handlers": ["err"]},
}
LEADER = text(
    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
    "(SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND ((l.classid::bigint << 32) | l.objid::bigint) = :key"
)


@dataclass
class Api:
    proc: subprocess.Popen
    port: int
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def start_api(env: dict[str, str], tmp: Path, name: str) -> Api:
    port = free_port()
    log = tmp / f"{name}.log"
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "backend.api.main:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-config",
        str(tmp / "log.json"),
    ]
    proc = subprocess.Popen(
        cmd, env=env, cwd=str(ROOT), stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    api = Api(proc, port, log)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited: {api.text()[-3000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, 90, f"{name} to answer", every=0.3)
    return api


@pytest.fixture
def database() -> Iterator[str]:
    with scratch_pg_database(prefix="bnlab_leader_") as url:
        yield url


def stale_run(database_url: str) -> int:
    """A run `running` whose worker stopped beating a minute ago (a lost worker)."""
    from sqlalchemy.orm import Session

    engine = create_engine(database_url, poolclass=NullPool)
    with Session(engine) as s, s.begin():
        run_id = add_bare_run(
            s,
            name="lost",
            claimed_by="gone:1:x",
            heartbeat_at=utcnow() - timedelta(minutes=1),
            started_at=utcnow() - timedelta(minutes=2),
        ).id
    engine.dispose()
    return run_id


def test_one_api_reconciles_and_another_takes_over(database: str, tmp_path: Path) -> None:
    """Breaks: two API processes serve one database, each with its reconciler thread; then
    the leading one is killed with SIGKILL (no shutdown, the way a host or container dies).
    Must hold: exactly one process holds the leader lock and only it repairs a lost worker's
    run; after the kill the other takes the lock and repairs the next lost run."""
    (tmp_path / "log.json").write_text(json.dumps(LOG_CONFIG))
    redis = PrivateRedis()
    redis.start()
    env = {
        **os.environ,
        "BNLAB_DATABASE_URL": database,
        "BNLAB_BROKER_URL": redis.url,
        "BNLAB_RECONCILE_S": "0.5",
        "BNLAB_HEARTBEAT_TIMEOUT_S": "5",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    env.pop("BNLAB_API_TOKEN", None)
    engine = create_engine(database, poolclass=NullPool)
    apis: list[Api] = []
    try:
        for name in ("api-a", "api-b"):
            apis.append(start_api({**env, "BNLAB_DATA_DIR": str(tmp_path / name)}, tmp_path, name))
        by_pid = {api.proc.pid: api for api in apis}

        def leader() -> Api | None:
            with engine.connect() as c:
                names = c.execute(LEADER, {"key": LEADER_LOCK}).scalars().all()
            assert len(names) <= 1, names
            found = re.match(r"bnlab:(\d+)@", names[0]) if names else None
            return by_pid.get(int(found.group(1))) if found else None

        first = wait_for(leader, 30, "an API process to take the leader lock")
        standby = next(api for api in apis if api is not first)

        def requeued(run_id: int) -> bool:
            with engine.connect() as c:
                status = c.execute(text("SELECT status FROM runs WHERE id = :i"), {"i": run_id})
                return status.scalar() == "queued"

        repaired = re.compile(r"reconciler: \{.*'queued': \[(\d+)\]")
        run1 = stale_run(database)
        wait_for(lambda: requeued(run1), 30, f"run {run1} to be requeued")
        wait_for(lambda: repaired.search(first.text()), 10, "the leader's repair log line")
        assert [int(i) for i in repaired.findall(first.text())] == [run1]
        assert "leads" not in standby.text() and not repaired.findall(standby.text())

        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        assert wait_for(leader, 30, "the standby to take the lead") is standby
        run2 = stale_run(database)
        wait_for(lambda: requeued(run2), 30, f"run {run2} to be requeued")
        wait_for(lambda: repaired.search(standby.text()), 10, "the new leader's repair log line")
        assert [int(i) for i in repaired.findall(standby.text())] == [run2]
        assert "this process leads" in standby.text()
    finally:
        for api in apis:
            if api.proc.poll() is None:
                api.proc.terminate()
                try:
                    api.proc.wait(15)
                except subprocess.TimeoutExpired:
                    api.proc.kill()
                    api.proc.wait()
        engine.dispose()
        redis.stop()


def test_lead_alone_on_sqlite(tmp_path: Path) -> None:
    """SQLite: one process serves the file, so its reconciler always runs (no lock needed)."""
    assert Leadership(f"sqlite:///{tmp_path / 'bnlab.db'}").check() is True
