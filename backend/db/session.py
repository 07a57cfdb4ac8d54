"""Engine and sessions from the settings; SQLite gets WAL + a busy timeout for concurrent
readers.

PostgreSQL: every process has one bounded pool (BNLAB_DB_POOL_SIZE kept open, at most
BNLAB_DB_MAX_OVERFLOW more under load), so the server's max_connections can be budgeted as
a sum over processes (docs/operations.md, "Connection budget"). Each connection carries an
application_name `bnlab:<pid>@<host>`, so pg_stat_activity says which process holds what.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from backend.settings import settings


def make_engine(url: str, *, pooled: bool = True) -> Engine:
    """pooled=False (PostgreSQL): every connect() is a connection of its own in autocommit,
    closed with it and outside the pool's budget: for a session that must stay open for long,
    the reconciler's advisory lock (backend/reconcile.py)."""
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            cur.execute("PRAGMA busy_timeout=30000")  # ms: wait for a lock instead of failing
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    # pool_pre_ping: a restarted PostgreSQL is noticed on checkout, not as a failed query.
    if pooled:
        engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout_s,
        )
    else:
        engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")

    @event.listens_for(engine, "do_connect")
    def _pg_connect_params(_dialect, _conn_rec, _cargs, cparams):  # noqa: ANN001
        # At connect time, not at engine creation: a forked child names its own pid. A URL's
        # own ?application_name= / ?connect_timeout= win.
        cparams.setdefault("application_name", application_name())
        cparams.setdefault("connect_timeout", settings.db_connect_timeout_s)

    return engine


def application_name() -> str:
    """What this process's connections call themselves (PostgreSQL keeps 63 bytes)."""
    return f"bnlab:{os.getpid()}@{socket.gethostname()}"[:63]


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def get_engine(url: str | None = None) -> Engine:
    """The process's one engine (one pool) for a database URL (default: the settings').

    Locked, and keyed by the URL itself: with functools.cache two threads asking first at the
    same moment (a worker's heartbeat thread and its first run) each built an engine, and
    get_engine() and get_engine(settings.database_url) were two keys; each engine is a pool of
    its own, so a process held more connections than its budget."""
    key = url or settings.database_url
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = make_engine(key)
        return engine


def _forget_engines() -> None:
    """Drop the engines (tests and `serve --data-dir` point the settings elsewhere)."""
    with _engines_lock:
        _engines.clear()


get_engine.cache_clear = _forget_engines  # type: ignore[attr-defined]  # the old @cache API


def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error (worker, CLI, scripts)."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
