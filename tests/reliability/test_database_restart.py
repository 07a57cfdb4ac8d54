"""Database restart: PostgreSQL stopped and started again in the middle of a run."""

from __future__ import annotations

import time

import pytest

from tests.reliability.helpers import expected_steps
from tests.worker.procs import (
    PrivatePostgres,
    PrivateRedis,
    Stack,
    scratch_pg_database,
    slow_config,
    wait_for,
)

pytestmark = pytest.mark.slow


def test_finish_run_with_every_step_once_after_postgres_restart(
    private_postgres: PrivatePostgres, private_redis: PrivateRedis, tmp_path
) -> None:
    """Breaks: a private PostgreSQL is stopped (fast shutdown: every connection dropped) for a
    few seconds while a run trains, then started again.
    Must hold: the worker's sink keeps its buffered probe points and retries, the run ends
    `succeeded` on its first attempt, and its series hold every probe step exactly once."""
    with scratch_pg_database(private_postgres.admin_url) as url:
        stack = Stack(
            url, private_redis.url, tmp_path, extra_env={"BNLAB_HEARTBEAT_TIMEOUT_S": "60"}
        )
        try:
            cfg = slow_config(train__epochs=4)
            run_id = stack.create_run(cfg)
            stack.start_worker()
            wait_for(lambda: stack.run(run_id).step >= 100, 120, "the run to be well under way")
            private_postgres.stop("fast")
            time.sleep(4)
            private_postgres.start()
            run = stack.wait_status(run_id, timeout=180)
            assert (run.status, run.attempt) == ("succeeded", 1), (run.error, stack.worker_log())
            assert "flush failed" in stack.worker_log() or "retrying" in stack.worker_log(), (
                "the outage did not hit the worker: the test proved nothing"
            )
            every = cfg["probe"]["every_steps"]
            assert stack.steps(run_id) == expected_steps(run.step, every)
            counts = stack.series_counts(run_id)
            assert counts["metric_rows"] == counts["metric_steps"]
            assert counts["layer_rows"] == counts["metric_rows"] * len(run.layer_names)
        finally:
            stack.stop_workers()
