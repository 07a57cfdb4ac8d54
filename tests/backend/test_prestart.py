"""`python -m backend.prestart` (the API container's first step): wait for the DB, migrate."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import create_engine, inspect

from tests.worker.procs import ROOT


def test_migrate_fresh_database_to_head(tmp_path) -> None:
    """On an empty database, prestart exits 0 and leaves every table in place."""
    url = f"sqlite:///{tmp_path / 'prestart.db'}"
    env = {**os.environ, "BNLAB_DATABASE_URL": url, "BNLAB_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "backend.prestart"],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert {"runs", "layer_stats", "workers"} <= set(inspect(create_engine(url)).get_table_names())


def test_several_replicas_migrate_one_database_at_once(tmp_path) -> None:
    """Four API replicas start together on an empty PostgreSQL database: all exit 0 (the
    advisory lock lets one migrate while the others wait) and the schema is at head once."""
    import uuid

    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from tests.worker.procs import ADMIN_PG

    name = f"bnlab_prestart_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN_PG).set(database=name).render_as_string(hide_password=False)
    env = {**os.environ, "BNLAB_DATABASE_URL": url, "BNLAB_DATA_DIR": str(tmp_path)}
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "backend.prestart"],
                env=env,
                cwd=str(ROOT),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(4)
        ]
        outs = [p.communicate(timeout=180)[0] for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, "\n".join(outs)
        engine = create_engine(url)
        with engine.connect() as c:
            versions = c.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        engine.dispose()
        from alembic.script import ScriptDirectory

        from backend.db.migrate import alembic_config

        assert versions == [ScriptDirectory.from_config(alembic_config(url)).get_current_head()]
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
