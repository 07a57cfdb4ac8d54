"""Queued runs are trained in the order they were queued: the messages a sweep sends in a burst
come out of the broker in that order (kombu's filesystem transport used by `bnlab serve` names
messages by millisecond + random uuid, so a same-millisecond burst used to come out shuffled),
and the worker reserves one message at a time."""

from __future__ import annotations

import base64
import json

from celery import Celery
from kombu import Queue

from backend import broker


def _filesystem_app(folder) -> Celery:
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    app = Celery("order-test", broker="filesystem://")
    app.conf.update(
        task_queues=[Queue(broker.QUEUE)],
        task_default_queue=broker.QUEUE,
        broker_transport_options={
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
        },
    )
    return app


def test_burst_comes_out_in_send_order(tmp_path):
    app = _filesystem_app(tmp_path)
    for run_id in range(1, 61):
        broker.enqueue_run(run_id, app)
    files = sorted(p.name for p in (tmp_path / "queue").iterdir())  # the transport's read order
    bodies = [json.loads((tmp_path / "queue" / f).read_text())["body"] for f in files]
    order = [json.loads(base64.b64decode(body))[0][0] for body in bodies]
    assert order == list(range(1, 61))


def test_worker_reserves_one_message_at_a_time():
    from worker.celery_app import celery_app

    conf = celery_app.conf
    assert conf.worker_prefetch_multiplier == 1 and conf.task_acks_late is True
