"""Double delivery: two workers receive a message for the same run at the same time (a
reconciler resend racing the original, a Redis visibility-timeout redelivery)."""

from __future__ import annotations

import pytest

from backend.broker import enqueue_run
from tests.worker.procs import Stack, slow_config, wait_for

pytestmark = pytest.mark.slow


def test_train_run_once_when_two_workers_get_it(stack: Stack) -> None:
    """Breaks: two live workers, and the run's message is sent twice while both are idle.
    Must hold: the database claim lets exactly one of them train it (attempt stays 1), and the
    other returns without training."""
    workers = [stack.start_worker(), stack.start_worker()]
    from backend.crud.workers import live_workers

    with stack.sessions() as s:
        wait_for(lambda: len(live_workers(s, timeout_s=5)) == 2, 90, "two live workers")
    run_id = stack.create_run(slow_config(train__epochs=1))
    enqueue_run(run_id, stack.app)
    run = stack.wait_status(run_id, timeout=120)
    wait_for(
        lambda: f"run {run_id}: not claimable" in stack.worker_log(),
        30,
        "the second delivery to be refused",
    )
    assert (run.status, run.attempt) == ("succeeded", 1), run.error
    assert all(w.proc.poll() is None for w in workers)
