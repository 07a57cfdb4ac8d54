"""The Alembic migrations build exactly the schema the models declare, on both databases."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from backend.db.migrate import alembic_config, upgrade
from backend.db.models import Base


def _diff(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request, tmp_path, api_db):
    """An empty SQLite file, or the session's PostgreSQL database emptied to `base`."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    return api_db


def test_migrate_to_models_schema(fresh_url):
    """`alembic upgrade head` leaves no difference between the database and models.py."""
    upgrade(fresh_url)
    assert _diff(fresh_url) == []


def test_downgrade_and_upgrade_again(tmp_path):
    """Every migration's downgrade works: base → head → base → head on SQLite."""
    url = f"sqlite:///{tmp_path / 'round.db'}"
    upgrade(url)
    command.downgrade(alembic_config(url), "base")
    assert set(inspect(create_engine(url)).get_table_names()) <= {"alembic_version"}
    upgrade(url)
    assert _diff(url) == []
