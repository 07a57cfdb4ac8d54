"""Shared fixtures (docs/design.md, "Real services in tests"): a fresh PostgreSQL database per
test session, migrated once with Alembic; per-test savepoint sessions rolled back at teardown; a
TestClient whose requests use that session; the real Redis (tests/utils/services.py: db 1 unless
BNLAB_TEST_REDIS says otherwise) as broker; a temporary data directory.

The settings singleton is patched in a session fixture (not through the environment at import
time), so tests that build their own Settings (worker, reliability) are not affected. Only the
tests that ask for `api_db` (directly or through `session` / `client`) create the database.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.utils.services import PG_ADMIN, flush_redis, pg_url
from tests.utils.services import REDIS_API as REDIS_URL  # the API tests' db


def _create_database(name: str) -> str:
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return pg_url(name)


def _drop_database(name: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _flush_redis() -> None:
    flush_redis(REDIS_URL)


@pytest.fixture(scope="session")
def api_db(tmp_path_factory) -> Iterator[str]:
    """URL of this session's database (`bnlab_api_<pid>`, at head); settings point at it."""
    from backend import broker
    from backend.db.migrate import upgrade
    from backend.db.session import get_engine
    from backend.settings import settings

    name = f"bnlab_api_{os.getpid()}"
    url = _create_database(name)
    upgrade(url)
    fields = ("data_dir", "database_url_", "broker_url_", "datasets_dir_", "api_token")
    saved = {f: getattr(settings, f) for f in fields}
    saved_celery = broker.celery_app
    data_dir = tmp_path_factory.mktemp("bnlab-data")
    settings.data_dir, settings.database_url_, settings.broker_url_ = data_dir, url, REDIS_URL
    settings.datasets_dir_, settings.api_token = None, None
    broker.celery_app = broker.make_celery(settings)
    get_engine.cache_clear()
    try:
        yield url
    finally:
        get_engine(url).dispose()
        get_engine.cache_clear()
        for f, value in saved.items():
            setattr(settings, f, value)
        broker.celery_app = saved_celery
        _drop_database(name)
        _flush_redis()


@pytest.fixture(scope="session")
def engine(api_db):
    """The session-wide SQLAlchemy engine on the test database."""
    from backend.db.session import get_engine

    return get_engine(api_db)


@pytest.fixture
def session(engine) -> Iterator:
    """A session inside an outer transaction: its commits are savepoints, all rolled back after."""
    from sqlalchemy.orm import Session

    conn = engine.connect()
    outer = conn.begin()
    db = Session(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield db
    finally:
        db.close()
        outer.rollback()
        conn.close()


@asynccontextmanager
async def _no_lifespan(_app):
    yield


@pytest.fixture
def app(session):
    """The FastAPI app with every request on the test's savepoint session."""
    from backend.api.deps import get_session
    from backend.api.main import create_app

    application = create_app()
    application.dependency_overrides[get_session] = lambda: session
    application.router.lifespan_context = _no_lifespan  # no background reconciler in API tests
    return application


@pytest.fixture
def client(app) -> Iterator:
    """A TestClient (lifespan not started: no background reconciler in unit tests)."""
    from fastapi.testclient import TestClient

    yield TestClient(app)


@pytest.fixture
def data_dir(api_db) -> Path:
    """The temporary data directory the settings point at."""
    from backend.settings import settings

    return settings.data_dir


def free_port_url() -> str:
    """A PostgreSQL URL on a local port where nothing listens (a database that is down)."""
    from tests.utils.net import free_port

    return f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing?connect_timeout=2"


@pytest.fixture(scope="session")
def browser():
    """One Chromium for the whole session (tests/conftest.py, so every test folder shares it):
    Playwright's sync API refuses a second instance while another one's event loop is alive."""
    from tests.frontend.dashboard_stack import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
