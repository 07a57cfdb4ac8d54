"""Container start-up for the API: wait for the database, then migrate to head.

    python -m backend.prestart && uvicorn --factory backend.api.main:create_app ...

Several API replicas may start at once (`--scale api=3`, a rolling restart): on PostgreSQL the
migration runs under a session advisory lock, so one replica migrates while the others wait
and then find the schema at head (two concurrent `CREATE TABLE`s would fail one replica).
With an S3 artifact store the bucket is created here too, before any upload needs it.
"""

from __future__ import annotations

import logging

from sqlalchemy import text
from tenacity import before_sleep_log, retry, stop_after_delay, wait_fixed

from backend.artifacts import get_store
from backend.db.migrate import upgrade
from backend.db.session import make_engine
from backend.settings import settings

log = logging.getLogger("bnlab.prestart")


@retry(
    stop=stop_after_delay(120),
    wait=wait_fixed(1),
    reraise=True,
    before_sleep=before_sleep_log(log, logging.WARNING),
)
def wait_for_database(url: str) -> None:
    """Return once `SELECT 1` succeeds (PostgreSQL may still be starting in compose)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()


# pg_advisory_lock key: "bnlab" in ASCII, a constant every replica shares.
MIGRATION_LOCK = 0x626E6C6162


def migrate(url: str) -> None:
    """upgrade(url), serialised across processes on PostgreSQL (SQLite has one writer anyway)."""
    if not url.startswith("postgresql"):
        upgrade(url)
        return
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
            try:
                upgrade(url)
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
    finally:
        engine.dispose()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    wait_for_database(settings.database_url)
    migrate(settings.database_url)
    log.info("database ready and at head")
    if settings.artifacts_url:
        get_store().ensure_bucket()
        log.info("artifact store ready: %s", settings.artifacts_url)


if __name__ == "__main__":
    main()
