"""`bnlab serve`: migrate, supervise real Celery worker subprocesses, serve the API.

The worker is a separate process (the API never imports torch); the supervisor restarts it
when it dies (OOM killer, kill -9, a crash), so a laptop stack heals itself like compose's
`restart: unless-stopped` does. A run the dead worker held goes stale and the reconciler
in the API requeues it; the restarted worker resumes it from its checkpoint.

Two deaths are not restarted, because a new worker would meet the same wall: a worker that
stopped because the database cannot be written (exit status os.EX_IOERR, worker/tasks.py) and
one killed by SIGBUS (a memory-mapped file, SQLite's -shm, that can no longer be accessed).
`bnlab serve` then says what failed and where, and exits non-zero.

Stopping (SIGTERM from systemd, docker or Slurm; SIGINT): the API stops taking requests, each
worker is asked to stop (SIGTERM: its training stops at the next probe and gives its run back
to the queue without spending an attempt, worker/tasks.py), a worker still busy after
BNLAB_STOP_GRACE_S is killed and its run given back here; then one line says what was done.
"""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn
from sqlalchemy.exc import DBAPIError

from backend.crud.lifecycle import release_runs_of_workers
from backend.db.migrate import upgrade
from backend.db.session import get_sessionmaker
from backend.settings import settings

log = logging.getLogger("bnlab.supervisor")
ROOT = Path(__file__).resolve().parent.parent  # holds the backend/ and worker/ packages
EXIT_STORAGE = os.EX_IOERR  # a worker's exit status when the database refuses writes
# uvicorn waits this long for open requests (a dashboard's event stream never ends by itself)
# before it closes them, so a stop is bounded.
HTTP_GRACE_S = 5.0


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
    for key, value in (("BNLAB_DB_POOL_SIZE", "2"), ("BNLAB_DB_MAX_OVERFLOW", "0")):
        env[key] = env.get(key) or value  # a worker needs 2 connections (docs/operations.md)
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
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        """slots: (name, extra env) per process, e.g. ("gpu3", {"CUDA_VISIBLE_DEVICES": "3"});
        default: n slots named bnlab0.. with no extra env. A restarted process keeps its slot.
        on_fatal(message): a worker died in a way a restart cannot mend (fatal_exit); it is
        not restarted, and the owner is expected to stop."""
        self.slots = slots or [(f"bnlab{i}", {}) for i in range(n)]
        self.n, self.min_uptime_s, self.env = len(self.slots), min_uptime_s, env
        self.on_fatal = on_fatal
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
            fatal = fatal_exit(self.slots[i][0], code)
            if fatal is not None:
                log.critical("%s", fatal)
                if self.on_fatal is not None:
                    self.on_fatal(fatal)
                return
            # A worker that dies at once (bad broker URL, import error) is retried slowly.
            backoff = (
                1.0 if time.monotonic() - started > self.min_uptime_s else min(backoff * 2, 30)
            )
            self.restarts += 1
            log.warning("worker %d exited with %s; restarting in %.0fs", i, code, backoff)
            self._stop.wait(backoff)

    def stop(self, timeout_s: float = 10.0, hurry: threading.Event | None = None) -> list[int]:
        """Warm shutdown: SIGTERM (a busy worker stops training at its next probe and gives
        its run back), then SIGKILL after timeout_s (or at once when `hurry` is set). Runs
        still held by these workers then go back to the queue without spending an attempt.
        Returns the ids of the runs given back here."""
        self._stop.set()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        hurry = hurry or threading.Event()
        for proc in self.procs.values():
            while proc.poll() is None and time.monotonic() < deadline and not hurry.is_set():
                hurry.wait(0.1)
            if proc.poll() is None:
                log.warning("worker pid %d still busy: killed, its run goes back", proc.pid)
                proc.kill()
                proc.wait()
        return release_held_runs([p.pid for p in self.procs.values()])


def release_held_runs(pids: list[int]) -> list[int]:
    """Give back the runs these (stopped) worker processes of this host still hold. Their new
    message is the reconciler's (a queued run whose message is not in the broker is sent
    again): importing the broker client here would create its folders before `prepare` can
    say that the data dir is read-only. Best effort: a database that cannot be reached leaves
    them to the reconciler too, which requeues them once their heartbeat is stale."""
    host = socket.gethostname()
    try:
        with get_sessionmaker()() as s:
            released = release_runs_of_workers(
                session=s, worker_prefixes=[f"{host}:{pid}:" for pid in pids]
            )
    except Exception as exc:  # noqa: BLE001 - stopping must finish; the reconciler catches up
        log.warning("could not give back the stopped workers' runs: %s", exc)
        return []
    return released


def fatal_exit(slot: str, code: int | None) -> str | None:
    """The message for a worker death a restart cannot mend, or None for any other exit."""
    if code == EXIT_STORAGE:
        return (
            f"worker {slot} stopped: {settings.database_location} cannot be written (its last log "
            "lines say why). Make it writable (permissions, immutable flag, read-only mount, "
            "free space) and start again: interrupted runs resume from their last checkpoint"
        )
    if code == -signal.SIGBUS:
        return (
            f"worker {slot} was killed by SIGBUS: a memory-mapped file could not be accessed, "
            f"most likely {settings.database_location} or its -shm/-wal files, on a disk "
            "that is full, read-only or was changed underneath (its Python stack is in the log "
            "above). Fix the disk and start again: interrupted runs resume from their last "
            "checkpoint"
        )
    return None


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


class StackFailure(SetupError):
    """The running stack met a failure it cannot mend (an unwritable database): one line."""


def serve_stack(*, host: str, port: int, n_workers: int) -> None:
    """`bnlab serve`: prepare, then run the stack (API + workers) in a child process and watch
    it. The child is what can meet a fatal signal: SQLite maps its -shm file into memory, and
    once that file can no longer be written (an immutable flag, a read-only remount, a full
    disk) any process touching the database dies of SIGBUS, the API included. This process
    never opens the database after `prepare`, so it outlives that, says what killed the stack
    and where, stops whatever the child left running (its workers share its process group),
    and exits non-zero (StackFailure). SIGTERM/SIGINT/SIGHUP are passed on to the child."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    prepare(settings)
    cmd = [sys.executable, "-m", "backend.supervisor", host, str(port), str(n_workers)]
    child = subprocess.Popen(
        cmd,
        env=worker_env(),
        cwd=str(ROOT),
        start_new_session=True,  # one process group: the child, its workers, nothing else
        preexec_fn=_die_with_parent,
    )

    def forward(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    code = child.wait()
    _stop_group(child.pid)
    if code == 0:
        return
    if code == EXIT_STORAGE:
        raise StackFailure(f"stopped: {settings.database_location} cannot be written (see above)")
    if code < 0:
        name = signal.Signals(-code).name
        hint = (
            f": a memory-mapped file could not be accessed, most likely "
            f"{settings.database_location} or its -shm/-wal files, on a disk that is full, "
            "read-only or was changed underneath. Fix it and start again: interrupted runs "
            "resume from their last checkpoint"
            if -code == signal.SIGBUS
            else ""
        )
        raise StackFailure(f"the server process was killed by {name}{hint} (stack above)")
    raise StackFailure(f"the server process exited with status {code} (see above)")


def _stop_group(pgid: int) -> None:
    """Whatever is left of the child's process group (workers of a child that died of a
    signal): SIGTERM (a busy worker stops at its next probe), SIGKILL after the grace."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + settings.stop_grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    log.warning("workers of the stopped server still running after the grace: killed")
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_stack(*, host: str, port: int, n_workers: int) -> None:
    """The stack itself (serve_stack's child): uvicorn serving the API in this process and
    the supervised workers; StackFailure when a worker met a failure a restart cannot mend."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    faulthandler.enable()  # a fatal signal (SIGBUS, SIGSEGV) prints every thread's stack
    server = uvicorn.Server(
        uvicorn.Config(
            "backend.api.main:create_app",
            factory=True,
            host=host,
            port=port,
            timeout_graceful_shutdown=HTTP_GRACE_S,
        )
    )
    failures: list[str] = []

    def fatal(message: str) -> None:
        failures.append(message)
        server.should_exit = True  # uvicorn polls it: the API stops, then the workers

    # uvicorn handles SIGTERM/SIGINT while it runs and re-raises the signal once it returned;
    # with the default handler that killed this process before its workers were stopped (they
    # trained on as orphans). These handlers note it instead; another one while the workers
    # are being stopped means "now": the busy ones are killed at once (runs still given back).
    received: list[int] = []
    stopping, hurry = threading.Event(), threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        if stopping.is_set():
            hurry.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    supervisor = WorkerSupervisor(n_workers, on_fatal=fatal).start()
    try:
        server.run()
    finally:
        stopping.set()
        started = time.monotonic()
        released = supervisor.stop(timeout_s=settings.stop_grace_s, hurry=hurry)
        why = signal.Signals(received[0]).name if received else "the API stopped"
        log.info(
            "bnlab serve stopped (%s): %d worker(s) stopped in %.1f s%s",
            "a worker failed" if failures else why,
            len(supervisor.procs),
            time.monotonic() - started,
            f"; runs given back to the queue: {released}" if released else "",
        )
    if failures:
        raise StackFailure(failures[0])


def main(argv: list[str] | None = None) -> int:
    """`python -m backend.supervisor HOST PORT WORKERS`: serve_stack's child."""
    host, port, n_workers = argv if argv is not None else sys.argv[1:]
    try:
        run_stack(host=host, port=int(port), n_workers=int(n_workers))
    except StackFailure:
        return EXIT_STORAGE  # the message was logged where it happened
    return 0


if __name__ == "__main__":
    sys.exit(main())
