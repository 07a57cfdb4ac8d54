"""`bnlab worker --gpus all|none|0,1,3`: one supervised Celery worker process per GPU.

Each process sees exactly one GPU: CUDA_VISIBLE_DEVICES=<its index> (with
CUDA_DEVICE_ORDER=PCI_BUS_ID, so the index means what nvidia-smi shows), so inside it the GPU
is always cuda:0 and N GPUs train N runs at once. A process that dies is restarted on the same
GPU (backend/supervisor.py, as for `bnlab serve`). Each one requires CUDA: if it cannot start
(driver too old for the wheel, no device) the process takes no run and says why
(worker/launch.py). `--gpus none` runs `--workers` CPU workers with every GPU hidden.

This module runs no torch: GPUs are listed with nvidia-smi (or /proc/driver/nvidia), so the
supervisor stays light and the CUDA state lives only in the children.
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import threading
from pathlib import Path

from backend.settings import HEALTH_DIR, settings
from backend.supervisor import WorkerSupervisor

log = logging.getLogger("bnlab.workers")
# Each worker process's health file (written by worker/device.py, read by worker/healthcheck.py).


class GpuSpecError(ValueError):
    """A --gpus value that names no usable GPU list (the CLI prints it, exit 2)."""


def query_gpus(field: str, timeout_s: float = 20) -> list[str] | None:
    """One value of `nvidia-smi --query-gpu=field` per GPU; None without a working nvidia-smi
    (absent, failing or hung), so callers can fall back to /proc."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run(
            [smi, f"--query-gpu={field}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def discover_gpus() -> list[str]:
    """Indices of the NVIDIA GPUs this host (or container) can see."""
    indices = query_gpus("index")
    if indices is not None:
        return indices
    gpus = Path("/proc/driver/nvidia/gpus")
    return [str(i) for i in range(len(list(gpus.iterdir())))] if gpus.is_dir() else []


def parse_gpus(spec: str, available: list[str] | None = None) -> list[str]:
    """'all' -> every visible GPU; 'none' -> []; '0,1,3' -> ['0', '1', '3'] (distinct indices)."""
    spec = spec.strip().lower()
    if spec == "none":
        return []
    if spec == "all":
        found = discover_gpus() if available is None else available
        if not found:
            raise GpuSpecError(
                "--gpus all: no NVIDIA GPU found (nvidia-smi lists none); "
                "use --gpus none to run CPU workers"
            )
        return found
    items = [s.strip() for s in spec.split(",")]
    if not all(s.isdigit() for s in items):
        raise GpuSpecError(f"--gpus must be all, none or GPU indices like 0,1,3; got {spec!r}")
    if len(set(items)) != len(items):
        raise GpuSpecError(f"--gpus lists a GPU twice: {spec!r} (one worker per GPU)")
    return [str(int(s)) for s in items]


def slots(gpus: list[str], cpu_workers: int = 1) -> list[tuple[str, dict[str, str]]]:
    """(slot name, env) per worker process."""
    if not gpus:  # CPU workers: hide every GPU so `device: auto` cannot pick one up by chance
        return [
            (f"cpu{i}", {"CUDA_VISIBLE_DEVICES": "", "BNLAB_REQUIRE_CUDA": "false"})
            for i in range(cpu_workers)
        ]
    return [
        (
            f"gpu{g}",
            {
                "CUDA_VISIBLE_DEVICES": g,
                "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                "BNLAB_REQUIRE_CUDA": "true",
            },
        )
        for g in gpus
    ]


def run_workers(gpus: list[str], cpu_workers: int = 1) -> None:
    """Supervise the workers until SIGTERM/SIGINT (compose's stop), then stop them warmly."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for folder in (settings.data_dir, settings.checkpoints_dir):
        Path(folder).mkdir(parents=True, exist_ok=True)
    _clear_health_files()
    plan = slots(gpus, cpu_workers)
    log.info(
        "starting %d worker(s): %s",
        len(plan),
        ", ".join(
            f"{name} (CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']!r})" for name, env in plan
        ),
    )
    stop, hurry = threading.Event(), threading.Event()
    failures: list[str] = []

    def on_signal(*_: object) -> None:
        if stop.is_set():  # a second signal while the workers stop: kill the busy ones now
            hurry.set()
        stop.set()

    def fatal(message: str) -> None:
        failures.append(message)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    supervisor = WorkerSupervisor(slots=plan, on_fatal=fatal).start()
    try:
        stop.wait()
    finally:
        # Warm shutdown: a busy worker stops at its next probe and gives its run back (no
        # attempt spent); one still busy after BNLAB_STOP_GRACE_S is killed and its run given
        # back here. Compose's stop_grace_period must be longer than this.
        released = supervisor.stop(timeout_s=settings.stop_grace_s, hurry=hurry)
        log.info(
            "workers stopped%s",
            f"; runs given back to the queue: {released}" if released else "",
        )
    if failures:  # one line and a non-zero exit, not a traceback (the CLI has no handler)
        raise SystemExit(f"bnlab worker: {failures[0]}")


def _clear_health_files() -> None:
    """Slots of an earlier start of this container would otherwise look silent forever."""
    for path in HEALTH_DIR.glob("worker-*.json"):
        path.unlink(missing_ok=True)
