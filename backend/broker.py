"""The Celery client, configured from the one settings object. No task code is imported here:
the API enqueues by name, so it never needs torch (docs/design.md, "Enqueue by name")."""

from __future__ import annotations

import threading
import time

from celery import Celery
from kombu import Queue

from backend.settings import Settings, settings

TRAIN_RUN = "bnlab.train_run"  # the one task name both sides know
QUEUE = "bnlab"


def make_celery(s: Settings = settings) -> Celery:
    app = Celery("bnlab", broker=s.broker_url)
    conf: dict = dict(
        task_queues=[Queue(QUEUE)],
        task_default_queue=QUEUE,
        task_create_missing_queues=False,
        task_routes={TRAIN_RUN: {"queue": QUEUE}},
        task_ignore_result=True,  # results live in the database, not in a result backend
        broker_connection_retry_on_startup=True,
    )
    if s.broker_url.startswith(("redis", "rediss")):
        # Set explicitly (kombu's default is 1 h): with acks_late a message stays unacked for
        # the whole run, and a run longer than the timeout would be delivered a second time.
        conf["broker_transport_options"] = {"visibility_timeout": s.visibility_timeout_s}
    if s.broker_url.startswith("filesystem"):
        folder = s.broker_dir
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        conf["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
            # kombu writes pidbox/exchange files to ./control by default: keep them in data_dir.
            "control_folder": str(folder / "control"),
        }
    app.conf.update(conf)
    return app


celery_app = make_celery()


_send_lock = threading.Lock()
_last_send_ms = -1


def _ms() -> int:
    return int(round(time.monotonic() * 1000))  # the clock kombu's filesystem transport names by


def enqueue_run(run_id: int, app: Celery | None = None) -> None:
    """Hand a committed run to the workers (docs/design.md, "Commit, then enqueue").

    Runs are trained in the order they were queued: Redis lists are FIFO and a worker reserves
    one message at a time (prefetch multiplier 1 with acks_late, worker/celery_app.py). kombu's
    filesystem transport (`bnlab serve`) names each message `<monotonic ms>_<random uuid>` and
    reads them in name order, so two sends in the same millisecond (a sweep's runs) came out in
    random order; here consecutive sends are at least one millisecond apart.
    """
    global _last_send_ms
    app = app or celery_app
    if not str(app.conf.broker_url or "").startswith("filesystem"):
        app.send_task(TRAIN_RUN, args=[run_id], queue=QUEUE)
        return
    with _send_lock:
        while _ms() <= _last_send_ms:
            time.sleep(0.0002)
        app.send_task(TRAIN_RUN, args=[run_id], queue=QUEUE)
        _last_send_ms = _ms()  # >= the name kombu gave this message
