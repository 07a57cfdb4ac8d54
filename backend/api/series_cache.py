"""Encoded series of ended runs, kept in memory and validated by ETag.

An ended run's points never change, so its encoded /metrics and /layers answers are reused
(a compare view re-opened, or 20 dashboards on the same runs, costs no database work) and a
browser revalidating with If-None-Match gets a 304 without a body. Running runs are never
cached. The key holds the run's status, step, attempt and finish time, so any change to the
run row makes a new key.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from backend.api.encode import SeriesResponse
from backend.db.models import TERMINAL_STATUSES, Run

MAX_BYTES = 128 * 2**20  # about 230 runs of 8 layers x 1000 steps


class SeriesCache:
    """A thread-safe LRU of (body, headers) by key, bounded in bytes."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes, self.size = max_bytes, 0
        self.items: OrderedDict[str, tuple[bytes, dict[str, str]]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str) -> tuple[bytes, dict[str, str]] | None:
        with self.lock:
            hit = self.items.get(key)
            if hit is not None:
                self.items.move_to_end(key)
            return hit

    def put(self, key: str, body: bytes, headers: dict[str, str]) -> None:
        with self.lock:
            if key in self.items or len(body) > self.max_bytes:
                return
            self.items[key] = (body, headers)
            self.size += len(body)
            while self.size > self.max_bytes:
                _, (old, _) = self.items.popitem(last=False)
                self.size -= len(old)

    def drop_run(self, run_id: int) -> None:
        with self.lock:
            for key in [k for k in self.items if k.startswith(f"{run_id}|")]:
                self.size -= len(self.items.pop(key)[0])


cache = SeriesCache()


def _key(run: Run, kind: str, params: tuple) -> str:
    finished = run.finished_at.isoformat() if run.finished_at else ""
    return f"{run.id}|{kind}|{params}|{run.status}|{run.step}|{run.attempt}|{finished}"


def serve_series(request: Request, run: Run, kind: str, params: tuple,
                 build: Callable[[], tuple[object, dict[str, str]]]) -> Response:
    """The encoded answer of `build()` (content, headers), cached and ETagged once the run ended."""
    if run.status not in TERMINAL_STATUSES:
        content, headers = build()
        return SeriesResponse(content, headers={**headers, "Cache-Control": "no-store"})
    key = _key(run, kind, params)
    etag = '"' + hashlib.sha1(key.encode()).hexdigest() + '"'
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers={"ETag": etag})
    hit = cache.get(key)
    if hit is None:
        content, headers = build()
        response = SeriesResponse(content, headers=headers)
        cache.put(key, response.body, headers)
        hit = response.body, headers
    body, headers = hit
    return Response(body, media_type="application/json",
                    headers={**headers, "ETag": etag, "Cache-Control": "no-cache"})
