"""One supervised worker process: `python -m worker.launch [celery worker options]`.

It probes the device first (worker/device.py). A usable one: the Celery worker runs in this
process with the options given. A GPU that was required but cannot start CUDA: no Celery
consumer at all (so no run is ever taken and trained on the CPU); the process stays up,
registers its row with the error (visible in /api/health) and keeps its health file failing,
until it is stopped.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading

from backend.crud.workers import register_worker, remove_worker
from backend.db.session import get_sessionmaker
from backend.settings import settings
from worker.celery_app import celery_app
from worker.device import current, usable, write_health

log = logging.getLogger("bnlab.worker")


def _idle_and_report(info: dict) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    worker_id = f"{socket.gethostname()}:{os.getpid()}:nocuda"
    sessions = get_sessionmaker()
    while not stop.is_set():
        write_health(info, ready=False)
        try:
            with sessions() as s, s.begin():
                register_worker(
                    session=s,
                    worker_id=worker_id,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    device=info,
                )
        except Exception as exc:  # noqa: BLE001 - the database may be down: retry next beat
            log.warning("could not report to the database: %s", exc)
        stop.wait(settings.heartbeat_s)
    try:
        with sessions() as s, s.begin():
            remove_worker(session=s, worker_id=worker_id)
    except Exception:  # noqa: BLE001 - a stale row is ignored after the timeout anyway
        pass


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    info = current()
    if not usable(info):
        _idle_and_report(info)
        return 0
    celery_app.worker_main(argv=["worker", *(sys.argv[1:] if argv is None else argv)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
