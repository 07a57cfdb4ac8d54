"""Worker loss: SIGKILL of the worker process mid-run (pre-emption, the OOM killer)."""

from __future__ import annotations

import pytest

from backend.crud.lifecycle import WORKER_LOST
from tests.reliability.helpers import ended, expected_steps, reconcile_until, summary_of
from tests.worker.procs import Stack, make_stack, slow_config, wait_for

pytestmark = pytest.mark.slow


def kill_after_first_checkpoint(stack: Stack, run_id: int) -> int:
    """Start a worker, wait until the run has written its first epoch checkpoint, kill -9 it.
    Returns the step the run had reached."""
    worker = stack.start_worker()
    checkpoint = stack.settings.checkpoints_dir / f"run-{run_id}.pt"
    wait_for(checkpoint.exists, 120, "the first epoch checkpoint")
    worker.kill9()
    run = stack.run(run_id)
    assert run.status == "running", f"the run ended before the kill: {run.status}"
    return run.step


def test_resume_killed_run_with_same_results(stack: Stack) -> None:
    """Breaks: the worker is SIGKILLed after the first epoch checkpoint.
    Must hold: the stale run is requeued (attempt 2), a new worker resumes it from the
    checkpoint, it ends with the same test accuracy and per-layer shift as an uninterrupted run
    of the same config, and its stored series hold every probe step exactly once."""
    cfg = slow_config(train__epochs=4)
    run_id = stack.create_run(cfg)
    step_at_kill = kill_after_first_checkpoint(stack, run_id)
    stack.start_worker()  # what `bnlab serve`'s supervisor or compose's restart policy does
    reconcile_until(stack, lambda: ended(stack, run_id))
    resumed = stack.run(run_id)
    assert (resumed.status, resumed.attempt) == ("succeeded", 2), (resumed.status, resumed.error)
    assert step_at_kill < resumed.step

    reference = stack.wait_status(stack.create_run(cfg), timeout=180)
    assert reference.status == "succeeded" and reference.attempt == 1
    acc, shift = summary_of(resumed)
    ref_acc, ref_shift = summary_of(reference)
    assert acc == ref_acc, (acc, ref_acc)
    assert shift == pytest.approx(ref_shift, rel=1e-6, abs=1e-9)
    every = cfg["probe"]["every_steps"]
    assert stack.steps(run_id) == expected_steps(resumed.step, every)
    assert stack.series_counts(run_id)["layer_rows"] == len(stack.steps(run_id)) * len(
        resumed.layer_names
    )


def test_fail_run_as_worker_lost_after_max_attempts(tmp_path) -> None:
    """Breaks: the worker is SIGKILLed on the run's last allowed attempt (max_attempts = 1).
    Must hold: the reconciler ends the run `failed` with "worker lost" instead of requeueing
    it, so no run stays `running` forever."""
    gen = make_stack("sqlite_fs", tmp_path)
    stack = next(gen)
    try:
        stack.env["BNLAB_MAX_ATTEMPTS"] = "1"
        stack.settings.max_attempts = 1
        run_id = stack.create_run(slow_config(train__epochs=4))
        kill_after_first_checkpoint(stack, run_id)
        reconcile_until(stack, lambda: ended(stack, run_id), timeout=60)
        run = stack.run(run_id)
        assert (run.status, run.error, run.attempt) == ("failed", WORKER_LOST, 1)
    finally:
        gen.close()
