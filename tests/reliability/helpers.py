"""Shared steps of the fault tests."""

from __future__ import annotations

import time

from backend.db.models import Run
from backend.reconcile import reconcile_once
from tests.worker.procs import Stack


def expected_steps(total: int, every: int) -> list[int]:
    """The probe steps an uninterrupted run emits (every `every` steps, and the last step)."""
    return sorted(set(range(every, total + 1, every)) | {total})


def reconcile_until(stack: Stack, done, timeout: float = 120.0) -> None:
    """Run the reconciler (as the API does every reconcile_s) until `done()` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reconcile_once(stack.app, stack.settings)
        if done():
            return
        time.sleep(stack.settings.reconcile_s)
    raise AssertionError(f"reconciler did not converge in {timeout}s\n{stack.worker_log()}")


def ended(stack: Stack, *run_ids: int) -> bool:
    return all(
        stack.run(i).status in ("succeeded", "failed", "cancelled", "diverged") for i in run_ids
    )


def summary_of(run: Run) -> tuple[float, dict[str, float]]:
    return run.summary["test_acc_eval"], run.summary["shift_by_layer"]
