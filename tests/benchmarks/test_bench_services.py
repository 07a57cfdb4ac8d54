"""Benchmarks run beside the tests (issue 26 item 5): their own PostgreSQL database and Redis
database, never the tests', and start-up waits that survive a loaded machine
(benchmarks/benchlib.py). Real PostgreSQL and real HTTP servers on loopback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import benchlib  # noqa: E402

from tests.utils.net import free_port  # noqa: E402
from tests.utils.services import DEFAULT_REDIS_API, DEFAULT_REDIS_WORKER  # noqa: E402


def _databases() -> set[str]:
    engine = create_engine(benchlib.admin_url())
    try:
        with engine.connect() as conn:
            return {r[0] for r in conn.execute(text("SELECT datname FROM pg_database"))}
    finally:
        engine.dispose()


def test_admin_database_is_never_the_tests(monkeypatch):
    """By default the benchmarks' admin connection is the tests' server with its `postgres`
    database; naming the tests' `test` database is refused with a message."""
    monkeypatch.delenv("BNLAB_BENCH_PG", raising=False)
    monkeypatch.setenv("BNLAB_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    url = make_url(benchlib.admin_url())
    assert (url.host, url.port, url.database) == ("127.0.0.1", 5432, "postgres")
    monkeypatch.setenv("BNLAB_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    with pytest.raises(SystemExit, match="tests' database 'test'"):
        benchlib.admin_url()


def test_redis_is_the_benchmarks_own(monkeypatch):
    monkeypatch.delenv("BNLAB_BENCH_REDIS", raising=False)
    assert benchlib.redis_url() not in (DEFAULT_REDIS_API, DEFAULT_REDIS_WORKER)
    assert benchlib.redis_url() == "redis://127.0.0.1:6379/12"
    monkeypatch.setenv("BNLAB_BENCH_REDIS", "redis://127.0.0.1:6379/4")
    assert benchlib.redis_url() == "redis://127.0.0.1:6379/4"


def test_scratch_database_is_created_migrated_and_dropped():
    """bnlab_bench_<pid>_<what>, at head while in use, gone afterwards (also after an error);
    a name outside bnlab_bench_* is refused before anything is dropped."""
    name = benchlib.database_name("svc")
    assert re.fullmatch(rf"bnlab_bench_{os.getpid()}_svc", name)
    with pytest.raises(KeyError), benchlib.scratch_database("svc") as url:
        assert make_url(url).database == name and name in _databases()
        engine = create_engine(url)
        with engine.connect() as conn:  # migrated: the runs table exists
            assert conn.execute(text("SELECT count(*) FROM runs")).scalar() == 0
        engine.dispose()
        raise KeyError("the benchmark failed")
    assert name not in _databases()
    with pytest.raises(ValueError, match="not a benchmark database"):
        benchlib.drop_database("test")


FORBIDDEN = [  # what the benchmarks used before: the tests' database and Redis databases
    "5432/test",
    "tests.conftest",
    "_create_database",
    "scratch_pg_database",
    '6379/1"',
    '6379/2"',
]


def test_no_benchmark_uses_the_tests_services():
    """No benchmark names the tests' database or Redis databases, or their fixtures."""
    offenders = [
        f"{path.name}: {bad}"
        for path in sorted((ROOT / "benchmarks").glob("*.py"))
        for bad in FORBIDDEN
        if bad in path.read_text()
    ]
    assert offenders == []


SLOW_SERVER = textwrap.dedent(
    """
    import http.server, sys, time
    time.sleep(float(sys.argv[2]))  # a server still importing on a loaded machine
    class H(http.server.BaseHTTPRequestHandler):
        calls = 0
        def do_GET(self):
            H.calls += 1
            self.send_response(200 if H.calls > 2 else 503)  # not ready at first
            self.end_headers()
        def log_message(self, *a):
            pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
    """
)


def test_wait_for_health_outlasts_a_slow_start_and_says_what_it_waited_for(capsys):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SERVER, str(port), "3"])
    try:
        t0 = time.monotonic()
        waited = benchlib.wait_for_health(
            f"http://127.0.0.1:{port}/api/health", what="the slow server", proc=proc
        )
        assert waited >= 3 and time.monotonic() - t0 >= 3
    finally:
        proc.kill()
        proc.wait()
    out = capsys.readouterr().out
    assert f"waiting up to 180 s for the slow server to answer http://127.0.0.1:{port}" in out
    assert "the slow server answered" in out


def test_wait_for_health_names_what_failed():
    """A server that exits ends the wait at once; one that never answers, at the deadline;
    both errors name what was awaited and where."""
    port = free_port()
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait()
    with pytest.raises(RuntimeError, match=r"the API exited with 3 before answering"):
        benchlib.wait_for_health(f"http://127.0.0.1:{port}/", what="the API", proc=dead)
    with pytest.raises(RuntimeError, match=r"nothing did not answer .* within 1 s"):
        benchlib.wait_for_health(f"http://127.0.0.1:{port}/", what="nothing", deadline_s=1)
