"""Fault tests: each breaks one real part (a worker process, Redis, PostgreSQL) and checks what
bnlab promises under that fault. Private servers on free ports keep the machine's shared
PostgreSQL and Redis up while they are restarted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.worker.procs import (
    PrivatePostgres,
    PrivateRedis,
    Stack,
    make_stack,
)


@pytest.fixture(params=["pg_redis", "sqlite_fs"])
def stack(request, tmp_path) -> Iterator[Stack]:
    """A fresh stack of each kind, no worker yet (PostgreSQL with a private redis-server)."""
    yield from make_stack(request.param, tmp_path, private_redis=True)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    server.start()
    yield server
    server.cleanup()
