"""Fixtures for worker tests: the two real set-ups, each with a real Celery worker subprocess.

- PostgreSQL (a scratch database `bnlab_wk_*` on 127.0.0.1:5432) + Redis db 2
- the embedded set-up: SQLite file + kombu filesystem broker in a temp data dir
Tests with a real worker commit and read back (docs/design.md, "Real services in tests"): the
worker cannot see an uncommitted transaction. Never task_always_eager: a real worker process.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.worker.procs import Stack, make_stack


@pytest.fixture(scope="module", params=["pg_redis", "sqlite_fs"])
def served(request, tmp_path_factory) -> Iterator[Stack]:
    """A stack with one worker already running, shared by a module's tests (both set-ups)."""
    gen = make_stack(request.param, tmp_path_factory.mktemp("served"))
    stack = next(gen)
    stack.start_worker()
    yield stack
    gen.close()


@pytest.fixture(params=["pg_redis", "sqlite_fs"])
def stack(request, tmp_path) -> Iterator[Stack]:
    """A fresh stack with no worker yet (the test starts and kills workers itself)."""
    yield from make_stack(request.param, tmp_path)


@pytest.fixture
def pg_stack(tmp_path) -> Iterator[Stack]:
    yield from make_stack("pg_redis", tmp_path)


@pytest.fixture
def sqlite_stack(tmp_path) -> Iterator[Stack]:
    yield from make_stack("sqlite_fs", tmp_path)
