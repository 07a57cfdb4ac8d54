"""This worker process's id in the `workers` table and in a run's claim."""

from __future__ import annotations

import os
import socket
import uuid

# One id per worker process, computed at import, before the pool forks, so a prefork child that
# re-runs a redelivered message is recognised as the same worker (claim_run's "owned by me"
# clause).
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
