"""Real processes for the worker and reliability tests: scratch databases, private PostgreSQL
and Redis servers, Celery worker subprocesses, and a `Stack` that ties one set-up together."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from backend.broker import enqueue_run, make_celery
from backend.db.migrate import upgrade
from backend.db.models import TERMINAL_STATUSES, LayerStat, Run, RunMetric, utcnow
from backend.db.session import get_sessionmaker
from backend.settings import Settings
from tests.utils.net import free_port
from tests.utils.runs import add_bare_run
from tests.utils.services import PG_ADMIN, REDIS_WORKER
from tests.utils.services import flush_redis as flush_redis

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PG = PG_ADMIN  # tests/utils/services.py: BNLAB_TEST_PG overrides it
SHARED_REDIS = REDIS_WORKER  # BNLAB_TEST_REDIS_WORKER (or BNLAB_TEST_REDIS) overrides it


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """A config that trains in about a second on one CPU thread."""
    cfg: dict[str, Any] = {
        "name": "tiny",
        "dataset": {"name": "digits"},
        "model": {"widths": [32], "dropout": {"rate": 0.2}},
        "train": {"epochs": 2, "batch_size": 64, "seed": 0, "device": "cpu"},
        "probe": {
            "every_steps": 5,
            "eval_batches": 1,
            "train_mode_test_batch_sizes": [1, 8],
            "recalibrate_samples": 256,
        },
    }
    return _merge(cfg, overrides)


def slow_config(**overrides: Any) -> dict[str, Any]:
    """Several seconds per epoch, so a fault can be injected mid-run after a checkpoint."""
    base = tiny_config(
        name="slow",
        dataset__name="synthetic",
        dataset__n_samples=20000,
        model__widths=[64, 64],
        train__epochs=3,
        train__batch_size=16,
        probe__every_steps=25,
    )
    return _merge(base, overrides)


def _merge(cfg: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextmanager
def scratch_pg_database(admin_url: str = ADMIN_PG, prefix: str = "bnlab_wk_") -> Iterator[str]:
    """A fresh database at head on the server of `admin_url`, dropped afterwards."""
    name = f"{prefix}{os.getpid()}_{uuid.uuid4().hex[:8]}"
    # NullPool: a fresh connection each time (the server may have been restarted in between).
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        from backend.db.session import get_engine

        get_engine.cache_clear()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class PrivatePostgres:
    """initdb + pg_ctl on a free port in a temp dir, as the postgres user (initdb refuses root)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bnlab_wk_pg_"))
        self.data = self.dir / "data"
        pg = pwd.getpwnam("postgres")
        os.chown(self.dir, pg.pw_uid, pg.pw_gid)
        self.bin = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1])
        self._as_pg(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        )
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.dir}'\nfsync = off\n"
            )

    def _as_pg(self, cmd: list[str]) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *cmd],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._as_pg(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.dir / "log"),
                "-w",
                "-t",
                "30",
                "start",
            ]
        )

    def stop(self, mode: str = "fast") -> None:
        self._as_pg([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def cleanup(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """A redis-server on a free port that keeps nothing on disk (as the machine's does)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(up, 10, "redis-server to listen")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class WorkerProc:
    """A real `celery worker` subprocess (solo pool: one job at a time, like `bnlab serve`)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.celery_app:celery_app",
            "worker",
            "--pool",
            "solo",
            "-Q",
            "bnlab",
            "-n",
            f"wk-{uuid.uuid4().hex[:6]}@%h",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=str(ROOT), stdout=log.open("ab"), stderr=subprocess.STDOUT
        )

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()


@dataclass
class Stack:
    """One database + broker + data dir, the env a worker gets, and helpers over them."""

    database_url: str
    broker_url: str
    data_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: list[WorkerProc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.env = {
            **os.environ,
            "BNLAB_DATABASE_URL": self.database_url,
            "BNLAB_BROKER_URL": self.broker_url,
            "BNLAB_DATA_DIR": str(self.data_dir),
            "BNLAB_HEARTBEAT_S": "0.5",
            "BNLAB_HEARTBEAT_TIMEOUT_S": "6",
            "BNLAB_RECONCILE_S": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
            ),
            **self.extra_env,
        }
        e = self.env
        self.settings = Settings(
            data_dir=self.data_dir,
            BNLAB_DATABASE_URL=self.database_url,
            BNLAB_BROKER_URL=self.broker_url,
            heartbeat_s=float(e["BNLAB_HEARTBEAT_S"]),
            heartbeat_timeout_s=float(e["BNLAB_HEARTBEAT_TIMEOUT_S"]),
            reconcile_s=float(e["BNLAB_RECONCILE_S"]),
            max_attempts=int(e.get("BNLAB_MAX_ATTEMPTS", 3)),
        )
        self.app: Celery = make_celery(self.settings)
        self.sessions = get_sessionmaker(self.database_url)

    def start_worker(self) -> WorkerProc:
        w = WorkerProc(self.env, self.data_dir / "worker.log")
        self.workers.append(w)
        return w

    def stop_workers(self) -> None:
        for w in self.workers:
            w.stop()

    def worker_log(self) -> str:
        path = self.data_dir / "worker.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    def create_run(self, config: dict[str, Any], enqueue: bool = True) -> int:
        """Store a queued run (as the API does), commit, then enqueue (rule 13)."""
        with self.sessions() as s, s.begin():
            run_id = add_bare_run(
                s, name=config.get("name", "run"), status="queued", config=config, attempt=0
            ).id
        if enqueue:
            enqueue_run(run_id, self.app)
            with self.sessions() as s, s.begin():
                s.get(Run, run_id).enqueued_at = utcnow()
        return run_id

    def run(self, run_id: int) -> Run:
        with self.sessions() as s:
            return s.get(Run, run_id)

    def wait_status(
        self, run_id: int, statuses: tuple[str, ...] = TERMINAL_STATUSES, timeout: float = 90
    ) -> Run:
        try:
            return wait_for(
                lambda: (r := self.run(run_id)) and r.status in statuses and r,
                timeout,
                f"run {run_id} to reach {statuses}",
                every=0.2,
            )
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; run={vars(self.run(run_id))}\n{self.worker_log()}"
            ) from exc

    def series_counts(self, run_id: int) -> dict[str, int]:
        with self.sessions() as s:
            return {
                "metric_rows": s.scalar(select(func.count()).where(RunMetric.run_id == run_id)),
                "metric_steps": s.scalar(
                    select(func.count(func.distinct(RunMetric.step))).where(
                        RunMetric.run_id == run_id
                    )
                ),
                "layer_rows": s.scalar(select(func.count()).where(LayerStat.run_id == run_id)),
            }

    def steps(self, run_id: int) -> list[int]:
        with self.sessions() as s:
            return list(
                s.scalars(
                    select(RunMetric.step)
                    .where(RunMetric.run_id == run_id)
                    .order_by(RunMetric.step)
                )
            )


def make_stack(kind: str, tmp: Path, private_redis: bool = False) -> Iterator[Stack]:
    """Yield a Stack of `kind` ("pg_redis" or "sqlite_fs"); stop its workers afterwards.
    private_redis: a redis-server of its own instead of the shared one's worker db (fault tests:
    nothing another process sends to that db can reach them)."""
    data_dir = tmp / kind
    data_dir.mkdir(parents=True, exist_ok=True)
    if kind == "pg_redis":
        server = PrivateRedis() if private_redis else None
        if server:
            server.start()
        broker_url = server.url if server else SHARED_REDIS
        flush_redis(broker_url)
        try:
            with scratch_pg_database() as url:
                stack = Stack(url, broker_url, data_dir)
                try:
                    yield stack
                finally:
                    stack.stop_workers()
                    flush_redis(broker_url)
        finally:
            if server:
                server.stop()
    else:
        url = f"sqlite:///{data_dir / 'bnlab.db'}"
        upgrade(url)
        stack = Stack(url, "filesystem://", data_dir)
        try:
            yield stack
        finally:
            stack.stop_workers()


@contextmanager
def database_sessions(kind: str, tmp: Path) -> Iterator[Any]:
    """A sessionmaker on a migrated scratch database: "postgresql" or "sqlite"."""
    from sqlalchemy.orm import sessionmaker

    from backend.db.session import make_engine

    if kind == "postgresql":
        with scratch_pg_database() as url:
            engine = make_engine(url)
            try:
                yield sessionmaker(bind=engine, expire_on_commit=False)
            finally:
                engine.dispose()
    else:
        url = f"sqlite:///{tmp / 'scratch.db'}"
        upgrade(url)
        engine = make_engine(url)
        try:
            yield sessionmaker(bind=engine, expire_on_commit=False)
        finally:
            engine.dispose()
