"""The worker container's healthcheck: `python -m worker.healthcheck` exits 0 when every
supervised worker process beat recently and can take runs, else 1 with the reason.

It reads the health files the workers' heartbeat threads write (worker/device.py), not the
database: a database restart must not make every worker look sick, and a worker whose CUDA
cannot start must look sick even though it is alive.
"""

from __future__ import annotations

import json
import sys
import time

# Only the settings module: a healthcheck that imported torch or the database would miss its
# timeout on a busy host and call a healthy worker sick.
from backend.settings import HEALTH_DIR, settings


def check(max_age_s: float | None = None) -> tuple[bool, str]:
    max_age_s = max_age_s or 3 * settings.heartbeat_s + 10
    files = sorted(HEALTH_DIR.glob("worker-*.json"))
    if not files:
        return False, "no worker has reported yet"
    problems, now = [], time.time()
    for path in files:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now
        name = path.stem
        if now - state["ts"] > max_age_s:
            problems.append(f"{name}: silent for {now - state['ts']:.0f}s")
        elif not state["ready"]:
            problems.append(f"{name}: {state['error']}")
    ok = not problems
    return ok, "; ".join(problems) or f"{len(files)} worker(s) ready"


def main() -> int:
    ok, text = check()
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
