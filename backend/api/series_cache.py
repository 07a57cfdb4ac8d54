"""Encoded series of ended runs, kept in memory and validated by ETag.

An ended run's points never change, so its encoded /metrics and /layers answers are reused
(a compare view re-opened, or 20 dashboards on the same runs, costs no database work) and a
browser revalidating with If-None-Match gets a 304 without a body. Running runs are never
cached. The key holds the run's status, step, attempt and finish time, so any change to the
run row makes a new key. GET /api/compare shares these entries: it answers with the same
per-run bodies.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response

from backend.api.encode import dumps
from backend.crud.packs import signature
from backend.db.models import Run

MAX_BYTES = 128 * 2**20  # about 230 runs of 8 layers x 1000 steps
Answer = tuple[bytes, dict[str, str]]  # encoded body, headers
# Builds the (content, headers) of several runs at once: {run id: (content, headers)}.
BuildMany = Callable[[Sequence[Run]], dict[int, tuple[object, dict[str, str]]]]


class SeriesCache:
    """A thread-safe LRU of (body, headers) by key, bounded in bytes."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes, self.size = max_bytes, 0
        self.items: OrderedDict[str, Answer] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str) -> Answer | None:
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


def _key(run: Run, kind: str, params: tuple) -> str | None:
    """The cache key of an ended run's answer; None for a run that may still change."""
    sig = signature(run)
    return None if sig is None else f"{run.id}|{kind}|{params}|{sig}"


def encoded(runs: Sequence[Run], kind: str, params: tuple, build: BuildMany) -> dict[int, Answer]:
    """Per run id, the encoded answer: from the cache, or built for all misses in one call."""
    keys = {run.id: _key(run, kind, params) for run in runs}
    out: dict[int, Answer] = {}
    for run in runs:
        hit = cache.get(keys[run.id]) if keys[run.id] else None
        if hit is not None:
            out[run.id] = hit
    missing = [run for run in runs if run.id not in out]
    built = build(missing) if missing else {}
    for run in missing:
        content, headers = built[run.id]
        body = dumps(content)
        if keys[run.id]:
            cache.put(keys[run.id], body, headers)
        out[run.id] = body, headers
    return out


def serve_series(
    request: Request, run: Run, kind: str, params: tuple, build: BuildMany
) -> Response:
    """One run's encoded answer of `build`, cached and ETagged once the run ended."""
    key = _key(run, kind, params)
    if key is None:
        body, headers = encoded([run], kind, params, build)[run.id]
        return Response(
            body, media_type="application/json", headers={**headers, "Cache-Control": "no-store"}
        )
    etag = '"' + hashlib.sha1(key.encode()).hexdigest() + '"'
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers={"ETag": etag})
    body, headers = encoded([run], kind, params, build)[run.id]
    return Response(
        body,
        media_type="application/json",
        headers={**headers, "ETag": etag, "Cache-Control": "no-cache"},
    )
