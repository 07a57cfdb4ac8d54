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
    done = subprocess.run([sys.executable, "-m", "backend.prestart"], env=env, cwd=str(ROOT),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert {"runs", "layer_stats", "workers"} <= set(inspect(create_engine(url)).get_table_names())
