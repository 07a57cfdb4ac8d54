"""Every address of a shared service the tests use, in one place, each overridable from the
environment so that two test runs on one machine never share a database or a Redis queue.

    BNLAB_TEST_PG            PostgreSQL admin URL (its database is where CREATE DATABASE runs);
                             default postgresql+psycopg://postgres@127.0.0.1:5432/test
    BNLAB_TEST_REDIS         Redis for the API tests (flushed at the end of their session);
                             default redis://127.0.0.1:6379/1
    BNLAB_TEST_REDIS_WORKER  Redis for the worker / SDK-server stacks (flushed before and after
                             each stack); default: BNLAB_TEST_REDIS when that is set (one
                             variable isolates a whole run), else redis://127.0.0.1:6379/2

Within one pytest process the API tests and the worker stacks may share a Redis database: tests
run one at a time, every stack flushes its queue before it starts a worker, and no API test
leaves a consumer behind. Two concurrent pytest processes must each set BNLAB_TEST_REDIS (or
both variables) to databases of their own. Scratch PostgreSQL databases carry the process id in
their names, so they never collide.
"""

from __future__ import annotations

import os

from sqlalchemy.engine import make_url

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_API = "redis://127.0.0.1:6379/1"
DEFAULT_REDIS_WORKER = "redis://127.0.0.1:6379/2"

PG_ADMIN: str = os.environ.get("BNLAB_TEST_PG") or DEFAULT_PG
PG_ADMIN_DB: str = make_url(PG_ADMIN).database or "postgres"
REDIS_API: str = os.environ.get("BNLAB_TEST_REDIS") or DEFAULT_REDIS_API
REDIS_WORKER: str = (
    os.environ.get("BNLAB_TEST_REDIS_WORKER")
    or os.environ.get("BNLAB_TEST_REDIS")
    or DEFAULT_REDIS_WORKER
)


def worker_redis(default_db: int) -> str:
    """The Redis URL for one more worker stack: the environment's choice when it makes one
    (BNLAB_TEST_REDIS_WORKER, else BNLAB_TEST_REDIS), else database `default_db` of the
    default server (a module that wants a queue of its own when nothing is set)."""
    chosen = os.environ.get("BNLAB_TEST_REDIS_WORKER") or os.environ.get("BNLAB_TEST_REDIS")
    return chosen or f"redis://127.0.0.1:6379/{default_db}"


def pg_url(database: str) -> str:
    """The URL of `database` on the admin URL's server (same user, host, port, driver)."""
    return make_url(PG_ADMIN).set(database=database).render_as_string(hide_password=False)


def flush_redis(url: str) -> None:
    """Empty one Redis database (a test's queue), never the whole server."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()
