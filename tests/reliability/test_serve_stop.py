"""`bnlab serve` as systemd, docker and Slurm stop it (SIGTERM), and with a database it can no
longer write (issue 21, items 6 and 8). Each test drives a real `bnlab serve` process (uvicorn
+ a supervised Celery worker, the embedded SQLite + filesystem-broker stack) training a real run
past its first epoch checkpoint, breaks one thing, and checks what serve says, how it exits,
that no worker outlives it, and that the run is resumable: a second serve on the same data dir
finishes it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool

from backend.db.models import Run, RunMetric
from tests.backend.test_cli import Served, write
from tests.worker.procs import slow_config, wait_for

pytestmark = pytest.mark.slow
EPOCHS = 6


def _run(server: Served, run_id: int) -> dict:
    return httpx.get(f"{server.url}/api/runs/{run_id}", timeout=10).json()


def _past_first_checkpoint(tmp: Path, **env: str) -> tuple[Served, int, int]:
    """A serve training a slow run, returned once the run's first epoch checkpoint exists."""
    server = Served(tmp, env)
    try:
        cfg = write(tmp, slow_config(name="stopped", train__epochs=EPOCHS))
        run_id = int(json.loads(server.cli("submit", str(cfg)).stdout.split()[1]))
        checkpoint = tmp / "data" / "checkpoints" / f"run-{run_id}.pt"
        wait_for(
            lambda: checkpoint.exists() and _run(server, run_id)["progress"] > 1.2 / EPOCHS,
            240,
            f"the first epoch checkpoint\n{server.tail()}",
            every=0.3,
        )
        [pid] = server.worker_pids()
    except BaseException:
        server.stop()
        raise
    return server, run_id, pid


def _log(server: Served) -> str:
    """All serve wrote (its workers' output included), read before a second serve reuses it."""
    return server.log.read_text(errors="replace")


def _steps_stored_once(tmp: Path, run_id: int, ended: dict) -> None:
    row = _row(tmp, run_id)
    assert row["metric_rows"] == row["metric_steps"] > 0, row  # no step twice, none missing
    assert row["metric_rows"] >= ended["summary"]["steps"] // 25, (row, ended["summary"])


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _row(tmp: Path, run_id: int) -> dict:
    """The run as stored, read from the SQLite file (serve is down)."""
    engine = create_engine(f"sqlite:///{tmp / 'data' / 'bnlab.db'}", poolclass=NullPool)
    try:
        with engine.connect() as c:
            run = c.execute(select(Run).where(Run.id == run_id)).mappings().one()
            steps = c.execute(
                select(func.count(), func.count(func.distinct(RunMetric.step))).where(
                    RunMetric.run_id == run_id
                )
            ).one()
        return {**run, "metric_rows": steps[0], "metric_steps": steps[1]}
    finally:
        engine.dispose()


def _finish_on_a_new_serve(tmp: Path, run_id: int) -> dict:
    """Start serve again on the same data dir and follow the run to its end."""
    server = Served(tmp)
    try:
        return wait_for(
            lambda: (r := _run(server, run_id))["status"] not in ("queued", "running") and r,
            300,
            f"the run to end after the restart\n{server.tail()}",
            every=0.5,
        )
    finally:
        server.stop()


# ---------------------------------------------------------------- SIGTERM (item 8)


@pytest.mark.parametrize("grace", ["60", "0"], ids=["worker-stops-itself", "killed-after-grace"])
def test_sigterm_stops_workers_and_requeues_without_spending_an_attempt(tmp_path, grace):
    """Breaks: SIGTERM to `bnlab serve` mid-run (after the first epoch checkpoint).
    Must hold: serve exits 0 with a line saying it stopped; its worker is gone when it exits
    (before: serve died of the signal at once, the worker trained on as an orphan to the end of
    the run); the run is back in the queue with its attempt given back (0, not 1), its
    checkpoint kept; a new serve resumes it and it ends `succeeded` on attempt 1, every probe
    step stored once. With BNLAB_STOP_GRACE_S=0 the busy worker is killed instead of stopping
    at its next probe, and serve itself gives the run back."""
    server, run_id, pid = _past_first_checkpoint(tmp_path, BNLAB_STOP_GRACE_S=grace)
    assert _run(server, run_id)["attempt"] == 1
    server.proc.send_signal(signal.SIGTERM)
    try:
        code = server.proc.wait(timeout=180)  # a hang guard, not a timing bound
    finally:
        server.stop()
    log = _log(server)
    assert code == 0, log[-4000:]
    assert not _alive(pid), f"worker {pid} outlived serve\n{log}"
    assert "bnlab serve stopped (SIGTERM)" in log, log[-4000:]
    if grace == "0":
        assert f"worker pid {pid} still busy: killed" in log, log[-4000:]
        assert f"runs given back to the queue: [{run_id}]" in log, log[-4000:]
    else:
        assert f"run {run_id}: worker stopping; run requeued, attempt not spent" in log, log[-4000:]
    row = _row(tmp_path, run_id)
    assert (row["status"], row["attempt"], row["claimed_by"]) == ("queued", 0, None), row
    assert (tmp_path / "data" / "checkpoints" / f"run-{run_id}.pt").exists()
    ended = _finish_on_a_new_serve(tmp_path, run_id)
    assert (ended["status"], ended["attempt"]) == ("succeeded", 1), ended
    _steps_stored_once(tmp_path, run_id, ended)


# ---------------------------------------------------------------- unwritable database (item 6)


@contextmanager
def _unwritable(paths: list[Path]) -> Iterator[str]:
    """Make the files refuse writes for real: the immutable flag as root (root ignores mode
    bits), the mode bits otherwise. Yields how."""
    files = [p for p in paths if p.exists()]
    if os.geteuid() == 0:
        if not shutil.which("chattr"):
            pytest.skip("root without chattr: nothing here can make a file refuse root's writes")
        done = []
        try:
            for p in files:
                if subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode:
                    pytest.skip(f"this filesystem has no immutable flag ({p})")
                done.append(p)
            yield "chattr +i"
        finally:
            for p in done:
                subprocess.run(["chattr", "-i", str(p)], check=True)
    else:
        modes = {p: p.stat().st_mode for p in files}
        try:
            for p in files:
                p.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            yield "chmod a-w"
        finally:
            for p, mode in modes.items():
                p.chmod(mode)


def test_unwritable_sqlite_stops_serve_with_the_cause_and_the_run_resumes(tmp_path):
    """Breaks: the SQLite database (file, -wal and -shm) is made immutable mid-run.
    Must hold: serve ends with one line naming the file and what happened, exits non-zero and
    leaves no worker behind (before: SQLite's memory-mapped -shm killed the worker and then
    serve's own process with SIGBUS, with no message and no exit line). Whichever process
    meets it first (a worker's write refused, or SIGBUS in a worker or in the API), the line
    is the same kind. Once the file is writable again a new serve resumes the run from its
    checkpoint and it ends `succeeded`."""
    server, run_id, pid = _past_first_checkpoint(tmp_path)
    db = (tmp_path / "data" / "bnlab.db").resolve()
    try:
        with _unwritable([db, Path(f"{db}-wal"), Path(f"{db}-shm")]):
            code = server.proc.wait(timeout=240)  # a hang guard, not a timing bound
    finally:
        server.stop()
    log = _log(server)
    assert code not in (0, None), log[-4000:]
    assert not _alive(pid), f"worker {pid} outlived serve\n{log[-4000:]}"
    last = log.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"the SQLite file {db}" in last, log[-4000:]
    assert "cannot be written" in last or "SIGBUS" in last, last
    ended = _finish_on_a_new_serve(tmp_path, run_id)
    assert ended["status"] == "succeeded", ended
    _steps_stored_once(tmp_path, run_id, ended)


def test_worker_killed_by_sigbus_stops_serve_with_the_cause(tmp_path):
    """Breaks: the worker gets SIGBUS (what a memory-mapped SQLite -shm on a full or changed
    disk delivers; here sent to the real worker, the closest this sandbox can produce it).
    Must hold: the worker's Python stack is in the log (faulthandler), serve says which file
    it suspects, exits non-zero instead of restarting the worker into the same fault, and the
    run resumes on a new serve."""
    server, run_id, pid = _past_first_checkpoint(tmp_path)
    try:
        os.kill(pid, signal.SIGBUS)
        code = server.proc.wait(timeout=180)  # a hang guard, not a timing bound
    finally:
        server.stop()
    log = _log(server)
    assert code not in (0, None), log[-4000:]
    assert "Fatal Python error: Bus error" in log, log[-4000:]
    assert "worker bnlab0 was killed by SIGBUS" in log and "bnlab.db" in log, log[-4000:]
    last = log.strip().splitlines()[-1]
    assert last.startswith("error: ") and "bnlab.db" in last, last
    ended = _finish_on_a_new_serve(tmp_path, run_id)
    assert ended["status"] == "succeeded", ended
