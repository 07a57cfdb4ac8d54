"""Container start-up for the API: wait for the database, then migrate to head.

    python -m backend.prestart && uvicorn --factory backend.api.main:create_app ...
"""

from __future__ import annotations

import logging

from sqlalchemy import text
from tenacity import before_sleep_log, retry, stop_after_delay, wait_fixed

from backend.db.migrate import upgrade
from backend.db.session import make_engine
from backend.settings import settings

log = logging.getLogger("bnlab.prestart")


@retry(stop=stop_after_delay(120), wait=wait_fixed(1), reraise=True,
       before_sleep=before_sleep_log(log, logging.WARNING))
def wait_for_database(url: str) -> None:
    """Return once `SELECT 1` succeeds (PostgreSQL may still be starting in compose)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    wait_for_database(settings.database_url)
    upgrade(settings.database_url)
    log.info("database ready and at head")


if __name__ == "__main__":
    main()
