"""Bounds on what requests may make the API hold (issue 21):

- UploadSizeLimit: a body past its route's cap is refused (413) while it streams in, before
  anything has parsed or spooled it: dataset uploads (BNLAB_MAX_UPLOAD_MB; crud.uploads checks
  the file size again) and the SDK's small JSON requests (a run's summary, config, resume).
- IngestBudget: the point batches being received and stored at once hold at most
  INGEST_INFLIGHT_BYTES of request bodies per API process (a JSON batch takes ~10x its size in
  memory while it is parsed); a batch that finds no room within INGEST_WAIT_S is a 503 with
  Retry-After, which the SDK retries.
- SqliteWriter: on the embedded SQLite backend one ingest at a time writes (SQLite has a single
  writer anyway; API threads queueing on its file lock, each statement up to the busy timeout,
  waited 111 s and were told "database unavailable"), with a bounded wait: a clear 503.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.settings import settings
from bnlab.core.schema.script_runs import MAX_CONFIG_BYTES, MAX_SUMMARY_BYTES

OVERHEAD = 64 * 1024  # multipart boundaries and part headers around the file; JSON around a field
MAX_INGEST_BODY = 64 * 2**20  # one /points request; MAX_LAYER_ROWS points are ~40 MB of JSON
INGEST_INFLIGHT_BYTES = MAX_INGEST_BODY  # one largest batch, or several of the SDK's (<= 8 MB)
INGEST_WAIT_S = 10.0  # how long a batch waits for room before it is told to come back
INGEST_RETRY_AFTER_S = 2
SQLITE_WRITER_WAIT_S = 10.0  # how long an ingest waits for the one SQLite writer slot


class Busy(Exception):
    """The server is at a bound (503 with Retry-After); `message` says which and why."""

    def __init__(self, message: str, retry_after: float = INGEST_RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = max(1, math.ceil(retry_after))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


# ----------------------------------------------------------------------------- body caps


class _BodyTooLarge(BaseException):
    # BaseException: FastAPI turns an Exception raised while parsing a form into a 400.
    pass


def _upload_rule() -> tuple[int, str]:
    return (
        settings.max_upload_mb * 2**20 + OVERHEAD,
        f"the upload is larger than the cap of {settings.max_upload_mb} MB (BNLAB_MAX_UPLOAD_MB)",
    )


# (path pattern, cap in bytes, what the 413 says): every POST a script run's client sends but
# /points (its route streams and caps the body itself, after checking the run key).
_RULES: list[tuple[re.Pattern[str], int, str]] = [
    (
        re.compile(r"^/api/runs/[^/]+/finish$"),
        MAX_SUMMARY_BYTES + OVERHEAD,
        f"summary: the finish body is larger than {MAX_SUMMARY_BYTES + OVERHEAD} bytes; a "
        f"run's summary holds at most {MAX_SUMMARY_BYTES} bytes of JSON",
    ),
    (
        re.compile(r"^/api/script-runs$"),
        MAX_CONFIG_BYTES + 2 * 2**20,  # the config, and up to 4096 layer names of 200 chars
        f"the run's body is larger than {MAX_CONFIG_BYTES + 2 * 2**20} bytes (config: at most "
        f"{MAX_CONFIG_BYTES} bytes of JSON)",
    ),
    (
        re.compile(r"^/api/runs/[^/]+/(resume|heartbeat)$"),
        OVERHEAD,
        f"the body is larger than {OVERHEAD} bytes",
    ),
]


def _rule(path: str) -> tuple[int, str] | None:
    if path.startswith("/api/datasets"):
        return _upload_rule()
    for pattern, cap, message in _RULES:
        if pattern.match(path):
            return cap, message
    return None


class UploadSizeLimit:
    """ASGI middleware: POST bodies of the routes in _rule() past their cap get a 413 that
    names the cap, without being read further."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rule = None
        if scope["type"] == "http" and scope["method"] == "POST":
            rule = _rule(scope["path"])
        if rule is None:
            return await self.app(scope, receive, send)
        limit, message = rule

        async def too_large() -> None:
            await JSONResponse({"detail": message}, 413)(scope, receive, send)

        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await too_large()
        received, started = 0, False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise _BodyTooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _BodyTooLarge:
            if not started:
                await too_large()


# ----------------------------------------------------------------------------- ingest


class IngestBudget:
    """Bytes of ingest bodies held at once in this process. Loop-agnostic (a lock and a short
    poll while full, not an asyncio primitive bound to one event loop): the API serves from one
    loop, the tests from one loop per client."""

    def __init__(self, capacity: int = INGEST_INFLIGHT_BYTES, wait_s: float = INGEST_WAIT_S):
        self.capacity, self.wait_s = capacity, wait_s
        self.used = 0
        self.peak = 0  # the most ever held at once (the tests read it)
        self._lock = threading.Lock()

    def _take(self, n: int) -> bool:
        with self._lock:
            if self.used and self.used + n > self.capacity:
                return False  # one request alone always fits, whatever its size
            self.used += n
            self.peak = max(self.peak, self.used)
            return True

    def _give(self, n: int) -> None:
        with self._lock:
            self.used -= n

    @asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[None]:
        """Room for a body of `n` bytes (its declared length, or the cap when unknown) for as
        long as it is read, parsed and stored; Busy after wait_s without room."""
        n = min(max(n, 1), self.capacity)
        deadline = time.monotonic() + self.wait_s
        while not self._take(n):
            if time.monotonic() >= deadline:
                raise Busy(
                    f"ingest is at its memory bound: {self.used} bytes of point batches are "
                    f"being stored (at most {self.capacity} per API process); this one "
                    f"({n} bytes) waited {self.wait_s:g} s; retry later",
                )
            await asyncio.sleep(0.02)
        try:
            yield
        finally:
            self._give(n)


class SqliteWriter:
    """The one ingest writing to the embedded SQLite file at a time, in this process. Another
    process (a worker storing its run's points) can still hold the file lock: then SQLite's
    busy timeout (db/session.py) bounds the wait once, and "database is locked" is a 503 that
    says so (routes/script_runs.py), not "database unavailable"."""

    def __init__(self, wait_s: float = SQLITE_WRITER_WAIT_S):
        self.wait_s = wait_s
        self._lock = threading.Lock()

    @contextmanager
    def slot(self) -> Iterator[None]:
        if not self._lock.acquire(timeout=self.wait_s):
            raise Busy(
                f"another ingest has been writing to the SQLite database for over "
                f"{self.wait_s:g} s (the embedded backend has one writer); retry later"
            )
        try:
            yield
        finally:
            self._lock.release()


ingest_budget = IngestBudget()
sqlite_writer = SqliteWriter()
