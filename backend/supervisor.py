"""`bnlab serve`: migrate, supervise real Celery worker subprocesses, serve the API.

The worker is a separate process (the API never imports torch); the supervisor restarts it
when it dies (OOM killer, kill -9, a crash), so a laptop stack heals itself like compose's
`restart: unless-stopped` does. A run the dead worker held goes stale and the reconciler
in the API requeues it; the restarted worker resumes it from its checkpoint.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from sqlalchemy.exc import DBAPIError

from backend.db.migrate import upgrade
from backend.settings import settings

log = logging.getLogger("bnlab.supervisor")
ROOT = Path(__file__).resolve().parent.parent  # holds the backend/ and worker/ packages


def worker_command(name: str, loglevel: str = "INFO") -> list[str]:
    """One Celery worker, one job at a time (solo pool: the task runs in the worker process).
    worker.launch checks the device first (a required GPU without CUDA takes no run)."""
    return [
        sys.executable,
        "-m",
        "worker.launch",
        "--pool",
        "solo",
        "--concurrency",
        "1",
        "-Q",
        "bnlab",
        "-n",
        name,
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
    ]


def worker_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _die_with_parent() -> None:
    """Linux: the worker gets SIGTERM if `bnlab serve` dies, even by SIGKILL (no orphans)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the worker outlives a killed supervisor
        pass


class WorkerSupervisor:
    """Keeps `n` worker subprocesses alive until `stop()`; restarts each one that exits."""

    def __init__(
        self,
        n: int = 1,
        *,
        min_uptime_s: float = 10.0,
        env: dict[str, str] | None = None,
        slots: list[tuple[str, dict[str, str]]] | None = None,
    ) -> None:
        """slots: (name, extra env) per process, e.g. ("gpu3", {"CUDA_VISIBLE_DEVICES": "3"});
        default: n slots named bnlab0.. with no extra env. A restarted process keeps its slot."""
        self.slots = slots or [(f"bnlab{i}", {}) for i in range(n)]
        self.n, self.min_uptime_s, self.env = len(self.slots), min_uptime_s, env
        self.procs: dict[int, subprocess.Popen] = {}
        self.restarts = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> WorkerSupervisor:
        for i in range(self.n):
            t = threading.Thread(target=self._keep, args=(i,), name=f"supervise-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _spawn(self, i: int) -> subprocess.Popen:
        slot, extra = self.slots[i]
        name = f"{slot}-{os.getpid()}@%h"
        env = {**worker_env(self.env), **extra, "BNLAB_WORKER_SLOT": slot}
        return subprocess.Popen(
            worker_command(name), env=env, cwd=str(ROOT), preexec_fn=_die_with_parent
        )

    def _keep(self, i: int) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            started = time.monotonic()
            proc = self.procs[i] = self._spawn(i)
            code = proc.wait()
            if self._stop.is_set():
                return
            # A worker that dies at once (bad broker URL, import error) is retried slowly.
            backoff = (
                1.0 if time.monotonic() - started > self.min_uptime_s else min(backoff * 2, 30)
            )
            self.restarts += 1
            log.warning("worker %d exited with %s; restarting in %.0fs", i, code, backoff)
            self._stop.wait(backoff)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Warm shutdown (SIGTERM lets a task finish its step), then SIGKILL after timeout."""
        self._stop.set()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()  # its run goes stale and resumes from a checkpoint on next start
                proc.wait()


class SetupError(RuntimeError):
    """The stack cannot start here; the message says what and where, in one line."""


def prepare(settings) -> None:
    """Folders and schema, before any process touches them (SetupError when it cannot)."""
    for folder in (
        settings.data_dir,
        settings.datasets_dir,
        settings.checkpoints_dir,
        settings.uploads_dir,
        settings.exports_dir,
    ):
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            # mkdir succeeds on an existing read-only folder: prove it takes a file
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".bnlab-write-test-"):
                pass
        except OSError as exc:
            raise SetupError(
                f"cannot write the data directory {folder} ({exc.strerror}); "
                "use a writable --data-dir or BNLAB_DATA_DIR"
            ) from None
    try:
        upgrade(settings.database_url)
    except DBAPIError as exc:  # never print the URL: it may hold a password
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise SetupError(
            f"cannot open or migrate the database (BNLAB_DATABASE_URL): {reason}"
        ) from None


def serve_stack(*, host: str, port: int, n_workers: int) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    prepare(settings)
    supervisor = WorkerSupervisor(n_workers).start()
    try:
        uvicorn.run("backend.api.main:create_app", factory=True, host=host, port=port)
    finally:
        supervisor.stop()
