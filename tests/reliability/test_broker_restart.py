"""Broker loss: Redis restarted empty (it keeps nothing on disk) while runs are queued."""

from __future__ import annotations

import pytest

from tests.reliability.helpers import ended, expected_steps, reconcile_until
from tests.worker.procs import PrivateRedis, Stack, scratch_pg_database, tiny_config

pytestmark = pytest.mark.slow


def test_finish_each_queued_run_once_after_redis_restart(
    private_redis: PrivateRedis, tmp_path
) -> None:
    """Breaks: a private redis-server is killed and started empty with three runs queued and no
    worker consuming, so their messages are gone.
    Must hold: the reconciler sees queued runs with no message and enqueues them again; each
    run then trains exactly once (attempt 1, succeeded) with every probe step stored once."""
    with scratch_pg_database() as url:
        stack = Stack(url, private_redis.url, tmp_path)
        try:
            cfg = tiny_config()
            run_ids = [stack.create_run(cfg) for _ in range(3)]
            private_redis.stop()
            private_redis.start()  # same port, empty
            stack.start_worker()
            reconcile_until(stack, lambda: ended(stack, *run_ids), timeout=180)
            for run_id in run_ids:
                run = stack.run(run_id)
                assert (run.status, run.attempt) == ("succeeded", 1), (run_id, run.error)
                assert stack.steps(run_id) == expected_steps(run.step, cfg["probe"]["every_steps"])
        finally:
            stack.stop_workers()


def test_leave_run_alone_when_its_message_is_queued(private_redis: PrivateRedis, tmp_path) -> None:
    """Breaks nothing: a queued run whose message is still in Redis (no worker yet).
    Must hold: the reconciler does not send a second message for it."""
    from backend.reconcile import broker_run_ids, reconcile_once

    with scratch_pg_database() as url:
        stack = Stack(url, private_redis.url, tmp_path)
        run_id = stack.create_run(tiny_config())
        stack.settings.reconcile_s = 0.0  # consider every queued run at once
        out = reconcile_once(stack.app, stack.settings)
        assert out["resent"] == [] and broker_run_ids(stack.app, stack.settings) == {run_id}


def test_resend_queued_run_after_filesystem_queue_lost(stack: Stack) -> None:
    """Breaks: the message of a queued run vanishes from the broker (the queue is purged: a
    wiped broker folder, or Redis restarted empty), on both set-ups.
    Must hold: the reconciler enqueues the run again and it trains once."""
    run_id = stack.create_run(tiny_config())
    stack.app.control.purge() if stack.broker_url.startswith("redis") else [
        p.unlink() for p in (stack.settings.broker_dir / "queue").glob("*.msg")
    ]
    stack.start_worker()
    reconcile_until(stack, lambda: ended(stack, run_id), timeout=120)
    run = stack.run(run_id)
    assert (run.status, run.attempt) == ("succeeded", 1), run.error
