"""What this worker process trains on, found once at start and reported everywhere: the
`workers` row (so /api/health lists it), each run it trains, its log, and the health file the
container's healthcheck reads.

A worker pinned to a GPU (`bnlab worker --gpus ...` sets BNLAB_REQUIRE_CUDA) whose CUDA cannot
start, e.g. a CUDA 13 wheel on a host driver too old for it, must say so and refuse runs:
`device: auto` would otherwise train on the CPU, hundreds of times slower, without a word.
"""

from __future__ import annotations

import json
import logging
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from backend.gpu_workers import query_gpus
from backend.settings import HEALTH_DIR, settings

log = logging.getLogger(__name__)


def _driver_version() -> str | None:
    """The NVIDIA kernel driver's version (nvidia-smi, else /proc), None without one."""
    versions = query_gpus("driver_version", timeout_s=10)
    if versions:
        return versions[0]
    try:  # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  ..."
        words = Path("/proc/driver/nvidia/version").read_text().split()
        return next(w for w in words if w[:1].isdigit() and "." in w)
    except (OSError, StopIteration):
        return None


def probe(require_cuda: bool) -> dict[str, Any]:
    """The device report: JSON-ready, stored in workers.device.

    `error` is set only when a GPU was required (BNLAB_REQUIRE_CUDA) and CUDA did not start:
    that worker refuses runs. A worker free to use the CPU (a CPU-only torch wheel, a machine
    without a GPU) is a CPU worker, not a failure: why CUDA is not in use goes in `cuda_note`,
    and /api/health shows `kind: "cpu"` with no error."""
    info: dict[str, Any] = {
        "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "require_cuda": require_cuda,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": False,
        "gpu_name": None,
        "driver": _driver_version(),
        "kind": "cpu",
        "name": "cpu",
        "cuda_note": None,
        "error": None,
    }
    reason = None
    if torch.version.cuda is None and not require_cuda:
        # A CPU-only torch build: nothing to start (torch.cuda.init() would only raise).
        reason = f"torch {torch.__version__} is a CPU-only build"
    else:
        try:
            torch.cuda.init()  # raises with the reason (no driver, driver too old, no CUDA build)
            info["cuda_available"] = torch.cuda.is_available()
            if info["cuda_available"]:
                info["gpu_name"] = torch.cuda.get_device_name(0)
        except Exception as exc:  # noqa: BLE001 - the reason is the report
            reason = f"CUDA cannot start: {type(exc).__name__}: {exc}".strip()
        if reason is None and not info["cuda_available"]:
            reason = "CUDA cannot start: no CUDA device visible"
    if info["cuda_available"]:
        info["kind"] = "gpu"
    if require_cuda:
        info["error"] = reason
    else:
        info["cuda_note"] = reason
    info["name"] = describe(info)
    return info


@lru_cache(maxsize=1)
def current() -> dict[str, Any]:
    """This process's report (probed once; CUDA does not come back without a restart)."""
    info = probe(settings.require_cuda)
    if info["error"] and settings.require_cuda:
        log.error(
            "%s (CUDA_VISIBLE_DEVICES=%s, torch %s built for CUDA %s, NVIDIA driver %s). "
            "This worker takes no runs: it would train on the CPU. Install an NVIDIA "
            "driver that supports CUDA %s, or start the worker with --gpus none.",
            info["error"],
            info["visible_devices"],
            info["torch"],
            info["torch_cuda"],
            info["driver"],
            info["torch_cuda"],
        )
    else:
        log.info("worker device: %s", describe(info))
    return info


def usable(info: dict[str, Any]) -> bool:
    """False when a GPU was required and CUDA did not start: the worker must take no run."""
    return not (info["require_cuda"] and info["error"])


def describe(info: dict[str, Any]) -> str:
    """One line for runs.device and the log: 'NVIDIA A100 (driver 550.54, GPU 3)' or 'cpu'."""
    if not info["cuda_available"]:
        return "cpu"
    extra = [f"driver {info['driver']}"] if info["driver"] else []
    if info["visible_devices"]:
        extra.append(f"GPU {info['visible_devices']}")
    return f"{info['gpu_name']} ({', '.join(extra)})" if extra else str(info["gpu_name"])


# --- the container healthcheck's view: one small file per supervised slot ------------------


def health_path(slot: str | None = None) -> Path:
    return HEALTH_DIR / f"worker-{slot or os.environ.get('BNLAB_WORKER_SLOT', os.getpid())}.json"


def write_health(info: dict[str, Any], *, ready: bool) -> None:
    """Called by the worker's heartbeat thread: alive at `ts`, ready to take runs or not."""
    HEALTH_DIR.mkdir(parents=True, exist_ok=True)
    path = health_path()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {
                "ts": time.time(),
                "pid": os.getpid(),
                "ready": ready,
                "error": info.get("error") if not usable(info) else None,
                "device": describe(info),
            }
        )
    )
    os.replace(tmp, path)
