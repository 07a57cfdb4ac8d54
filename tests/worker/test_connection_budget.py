"""The PostgreSQL connection budget (issue 27 item 3, docs/operations.md "Connection budget"):
16 real Celery worker processes train 16 runs against a private PostgreSQL whose
max_connections is 40. Each worker process gets the pool the compose worker service gives it
(BNLAB_DB_POOL_SIZE / BNLAB_DB_MAX_OVERFLOW), so the cluster never runs out of connections:
every run succeeds on its first attempt with every probe step stored once, no connection is
refused, and no process ever holds more than its budget (seen in pg_stat_activity, each worker
named by the application_name in its database URL)."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import NullPool

from backend.db import session as session_module
from backend.db.models import TERMINAL_STATUSES
from backend.db.session import get_engine, make_engine
from backend.settings import settings
from tests.reliability.helpers import expected_steps, reconcile_until
from tests.worker.procs import (
    ADMIN_PG,
    PrivatePostgres,
    PrivateRedis,
    Stack,
    WorkerProc,
    scratch_pg_database,
    tiny_config,
)

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 16
RUNS = WORKERS
MAX_CONNECTIONS = 40


def compose_worker_pool() -> dict[str, str]:
    """The pool settings docker-compose.yml gives the worker service (their defaults)."""
    env = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["worker"][
        "environment"
    ]
    out = {}
    for name in ("BNLAB_DB_POOL_SIZE", "BNLAB_DB_MAX_OVERFLOW"):
        found = re.fullmatch(r"\$\{\w+:-(\d+)\}", str(env[name]))
        assert found, f"compose worker {name} has no numeric default: {env[name]!r}"
        out[name] = found.group(1)
    return out


class Sampler:
    """Polls pg_stat_activity every 20 ms on a connection of its own: the most connections
    each bnlab process held at once, the most client connections in all, and how many worker
    processes were connected at the same moment."""

    def __init__(self, admin_url: str) -> None:
        self.engine = create_engine(admin_url, poolclass=NullPool)
        self.per_process: Counter[str] = Counter()
        self.total = 0
        self.processes_at_once = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with self.engine.connect() as conn:
            while not self._stop.wait(0.02):
                rows = conn.execute(
                    text(
                        "SELECT application_name, count(*) FROM pg_stat_activity "
                        "WHERE backend_type = 'client backend' GROUP BY 1"
                    )
                ).all()
                conn.rollback()  # a fresh snapshot each time
                self.total = max(self.total, sum(n for _, n in rows))
                ours = {name: n for name, n in rows if re.fullmatch(r"wk\d+", name)}
                for name, n in ours.items():
                    self.per_process[name] = max(self.per_process[name], n)
                self.processes_at_once = max(self.processes_at_once, len(ours))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.engine.dispose()


@pytest.fixture
def small_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    with open(server.data / "postgresql.conf", "a") as f:
        f.write(f"max_connections = {MAX_CONNECTIONS}\n")
    server.start()
    yield server
    server.cleanup()


@pytest.mark.slow
def test_train_on_16_workers_within_40_connections(
    small_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    """Breaks: 16 worker processes, each beating its heartbeats 5 times a second while it
    trains, share a PostgreSQL with max_connections = 40 (plus the reconciler and this test).
    Must hold: every run succeeds on attempt 1 with every probe step stored once, PostgreSQL
    refuses no connection, each worker process holds at most its pool's size + overflow, and
    all 16 are connected at once (they really trained side by side)."""
    pool = compose_worker_pool()
    budget = int(pool["BNLAB_DB_POOL_SIZE"]) + int(pool["BNLAB_DB_MAX_OVERFLOW"])
    assert budget * WORKERS + 4 <= MAX_CONNECTIONS, "the compose budget cannot fit this test"
    redis = PrivateRedis()
    redis.start()
    try:
        with scratch_pg_database(small_postgres.admin_url) as url:
            extra = {**pool, "BNLAB_HEARTBEAT_S": "0.2", "BNLAB_HEARTBEAT_TIMEOUT_S": "60"}
            stack = Stack(url, redis.url, tmp_path, extra_env=extra)
            try:
                with Sampler(small_postgres.admin_url) as sampler:
                    for n in range(WORKERS):
                        # Named in the URL, so the sampler can tell the processes apart.
                        env = {**stack.env, "BNLAB_DATABASE_URL": f"{url}?application_name=wk{n}"}
                        stack.workers.append(WorkerProc(env, tmp_path / "worker.log"))
                    ids = [
                        stack.create_run(tiny_config(name=f"budget-{i}", train__seed=i))
                        for i in range(RUNS)
                    ]
                    reconcile_until(
                        stack,
                        lambda: all(stack.run(i).status in TERMINAL_STATUSES for i in ids),
                        timeout=600,
                    )
                    time.sleep(1.0)  # the worker heartbeats go on after the runs: one more look
            finally:
                stack.stop_workers()
            runs = [stack.run(i) for i in ids]
            assert [(r.status, r.attempt) for r in runs] == [("succeeded", 1)] * RUNS, [
                (r.id, r.status, r.attempt, r.error) for r in runs if r.status != "succeeded"
            ]
            every = tiny_config()["probe"]["every_steps"]
            for run in runs:
                steps = stack.steps(run.id)
                assert steps == expected_steps(run.step, every), run.id
                counts = stack.series_counts(run.id)
                assert counts["layer_rows"] == len(steps) * len(run.layer_names), run.id
    finally:
        redis.stop()

    log = (small_postgres.dir / "log").read_text(errors="replace")
    assert "too many clients" not in log and "remaining connection slots" not in log
    workers = dict(sampler.per_process)
    assert len(workers) == WORKERS, sorted(workers)
    assert max(workers.values()) <= budget, workers
    assert sampler.processes_at_once >= WORKERS, sampler.processes_at_once
    print(
        f"\nconnection budget: {WORKERS} workers, {RUNS} runs: at most "
        f"{max(workers.values())} per worker process, {sampler.total} client connections in all"
    )


def test_name_each_connection_after_its_process() -> None:
    """pg_stat_activity tells which process holds a connection (`bnlab:<pid>@<host>`); a
    URL's own ?application_name= wins."""
    for url, expected in (
        (ADMIN_PG, f"bnlab:{os.getpid()}@{socket.gethostname()}"[:63]),
        (f"{ADMIN_PG}?application_name=mine", "mine"),
    ):
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                assert conn.execute(text("SHOW application_name")).scalar() == expected
        finally:
            engine.dispose()


def test_bound_the_pool_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """BNLAB_DB_POOL_SIZE + BNLAB_DB_MAX_OVERFLOW connections at most: one more checkout waits
    BNLAB_DB_POOL_TIMEOUT_S and fails instead of opening a connection past the budget."""
    monkeypatch.setattr(settings, "db_pool_size", 2)
    monkeypatch.setattr(settings, "db_max_overflow", 1)
    monkeypatch.setattr(settings, "db_pool_timeout_s", 0.5)
    engine = make_engine(ADMIN_PG)
    try:
        held = [engine.connect() for _ in range(3)]
        with pytest.raises(PoolTimeout):
            engine.connect()
        for conn in held:
            conn.close()
        assert engine.pool.checkedin() == 2  # the overflow one is closed when returned
    finally:
        engine.dispose()


def test_build_one_engine_when_threads_ask_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's heartbeat thread and its first run ask for the engine at the same moment:
    they must share one (one pool), or the process holds twice its budget. get_engine() and
    get_engine(<the settings' URL>) are one engine too."""
    made = []

    def slow_make_engine(url: str, **kwargs: object):
        time.sleep(0.2)  # widen the window in which a second caller can arrive
        made.append(url)
        return real_make_engine(url, **kwargs)

    real_make_engine = session_module.make_engine
    monkeypatch.setattr(session_module, "make_engine", slow_make_engine)
    monkeypatch.setattr(settings, "database_url_", ADMIN_PG)
    get_engine.cache_clear()
    start = threading.Barrier(8)
    got: list[object] = []

    def ask() -> None:
        start.wait()
        got.append(get_engine())

    try:
        threads = [threading.Thread(target=ask) for _ in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        got.append(get_engine(ADMIN_PG))
        assert len(got) == 9 and len({id(e) for e in got}) == 1 and made == [ADMIN_PG]
    finally:
        for engine in {id(e): e for e in got}.values():
            engine.dispose()
        get_engine.cache_clear()
