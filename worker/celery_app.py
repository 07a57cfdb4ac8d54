"""The worker's Celery app: the broker client of backend.broker plus worker-only settings.

acks_late + reject_on_worker_lost: a message is acknowledged only after the task returns, so a
worker killed mid-run does not silently drop it (docs/design.md, "Idempotent task, late acks";
the task is idempotent: the claim is atomic and points are upserts). Prefetch 1: one job at a
time per worker.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from celery.signals import worker_ready, worker_shutdown

from backend.broker import celery_app
from backend.crud.workers import register_worker, remove_worker, touch_worker
from backend.db.session import get_sessionmaker
from backend.settings import settings
from worker import tasks  # noqa: F401  registers bnlab.train_run on celery_app
from worker.device import current, write_health
from worker.identity import WORKER_ID

log = logging.getLogger(__name__)

celery_app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    include=["worker.tasks"],
)

_stop = threading.Event()


def _beat() -> None:
    """Keep this worker's row in the `workers` table fresh until shutdown."""
    sessions = get_sessionmaker()
    device = current()
    while True:
        write_health(device, ready=True)  # the container healthcheck reads it (no database)
        try:
            with sessions() as s, s.begin():
                if not touch_worker(session=s, worker_id=WORKER_ID):
                    register_worker(
                        session=s,
                        worker_id=WORKER_ID,
                        host=socket.gethostname(),
                        pid=os.getpid(),
                        device=device,
                    )
        except Exception as exc:  # database down: try again next beat, never kill the thread
            log.warning("worker heartbeat failed: %s", exc)
        if _stop.wait(settings.heartbeat_s):
            return


@worker_ready.connect
def _on_worker_ready(**_kwargs: object) -> None:
    threading.Thread(target=_beat, name="worker-heartbeat", daemon=True).start()


@worker_shutdown.connect
def _on_worker_shutdown(**_kwargs: object) -> None:
    _stop.set()
    try:
        with get_sessionmaker()() as s, s.begin():
            remove_worker(session=s, worker_id=WORKER_ID)
    except Exception as exc:  # the row goes stale and is ignored after the timeout
        log.warning("could not deregister worker: %s", exc)
