"""The SDK's way to the server: a local spool file and a sender thread (torch-free: `bnlab sync`
in the CLI uses it too).

Every record goes to the spool first (one JSON line each), then to the server. The training
thread appends the record to the spool and wakes the sender thread, which sends what the
server has not acknowledged, from a byte offset into the spool. When the server
is down or slow nothing is lost: the offset stays, the spool grows, and the next successful
request sends from there. If the process dies, `bnlab sync SPOOL` replays the file. The server
stores points idempotently by (run, step) and finds the run by its key, so sending a line
twice (a retry, or a second sync) stores it once.

Spool lines, in order of appearance:
  {"type": "run", "key", "name", "config", "tags", "host", "device", "started_at",
   "total_steps"?}                                                                  (new run)
  {"type": "resume", "run_id", "key", "total_steps"?}                     (bnlab.init(resume=))
  {"type": "watch", "layer_names": [...], "layer_keys": [...]}
  {"step": ..., "metrics": {...}, "layers": [[one value per layer key] | null, ...]}
      (one probe: the ingest record format as is, so a batch is these lines joined)
  {"type": "finish", "status", "summary", "error"}
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

try:  # the `sdk` extra; the standard library does the same, slower
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    loads = orjson.loads
except ImportError:  # pragma: no cover - exercised only without the extra

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()

    loads = json.loads

from bnlab.core.registry import RUN_KEY_HEADER

try:  # NumPy (it comes with most torch installs): layer points go as arrays, ~5x less server
    # work; without it (a bare client install) the same records go as JSON
    import numpy  # noqa: F401
except ModuleNotFoundError:  # pragma: no cover - exercised by the client-install test
    COLUMNS, columns_encode = "", None
else:
    from bnlab.core.wire import MEDIA_TYPE as COLUMNS
    from bnlab.core.wire import encode as columns_encode

log = logging.getLogger("bnlab")
CONTROL = b'{"type":'  # control lines start so; probe lines start with {"step":
MAX_BATCH_BYTES = 8 * 2**20  # one ingest request (the server takes up to 64 MB)
MAX_BATCH_RECORDS = 5_000  # the server takes up to 10,000


class Rejected(Exception):
    """The server refused a request for good (a 4xx other than 408/429): don't retry it."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


class Unreachable(Exception):
    """The server did not answer, or answered 5xx / 408 / 429: retry later."""


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        detail = body.get("message") or body.get("detail") or resp.text
    except ValueError:
        detail = resp.text
    return detail if isinstance(detail, str) else json.dumps(detail)


class Client:
    """The few REST calls the SDK makes (httpx, keep-alive)."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        key: str | None = None,
        params: dict | None = None,
        media: str = "application/json",
    ) -> Any:
        headers = {"Content-Type": media} if content is not None else {}
        if key:
            headers[RUN_KEY_HEADER] = key
        try:
            resp = self.http.request(method, path, content=content, headers=headers, params=params)
        except httpx.HTTPError as exc:  # refused, reset, timed out
            raise Unreachable(f"{self.url}: {exc}") from exc
        if resp.status_code >= 500 or resp.status_code in (408, 429):
            raise Unreachable(f"{method} {path} → {resp.status_code}: {_detail(resp)}")
        if resp.status_code >= 400:
            raise Rejected(resp.status_code, _detail(resp))
        return resp.json()


@dataclass
class Replay:
    """Where sending a spool stands: the run it writes to, the key that opens it, counters."""

    run_id: int | None = None
    key: str | None = None
    records: int = 0  # probe records acknowledged
    requests: int = 0
    finished: str | None = None  # the end the server recorded
    layer_keys: list[str] | None = None  # the statistics each layer row holds, in order
    cancel_requested: bool = False  # a points answer said someone pressed Cancel
    skipped: list[str] = field(default_factory=list)  # refused lines, with the reason


def send_lines(client: Client, lines: list[bytes], state: Replay) -> None:
    """Send consecutive spool lines in order (probe lines batched); raises Unreachable to stop
    (the caller keeps its offset before `lines`) and records Rejected ones in state.skipped."""
    batch: list[bytes] = []
    size = 0

    def flush() -> None:
        nonlocal batch, size
        body = None
        if batch and state.layer_keys and columns_encode is not None:
            try:
                body = columns_encode([loads(line) for line in batch], state.layer_keys)
            except ValueError:  # a malformed line: JSON lets the server name it
                body = None
        if body is not None:
            _post_points(client, state, body, len(batch), COLUMNS)
        elif batch:
            head = b'{"layer_keys":' + dumps(state.layer_keys) + b"," if state.layer_keys else b"{"
            body = head + b'"records":[' + b",".join(batch) + b"]}"
            _post_points(client, state, body, len(batch), "application/json")
        batch, size = [], 0

    for line in lines:
        if not line.startswith(CONTROL):
            batch.append(line)
            size += len(line)
            if len(batch) >= MAX_BATCH_RECORDS or size >= MAX_BATCH_BYTES:
                flush()
            continue
        flush()
        _control(client, state, loads(line))
    flush()


def _post_points(client: Client, state: Replay, body: bytes, n: int, media: str) -> None:
    if state.run_id is None:
        state.skipped.append(f"{n} records before any run line")
        return
    try:
        answer = client.call(
            "POST", f"/api/runs/{state.run_id}/points", content=body, key=state.key, media=media
        )
        state.records += n
        if isinstance(answer, dict) and answer.get("cancel_requested"):
            state.cancel_requested = True
    except Rejected as exc:
        state.skipped.append(f"{n} records: {exc}")
    state.requests += 1


def _control(client: Client, state: Replay, rec: dict[str, Any]) -> None:
    kind = rec.pop("type")
    try:
        if kind == "run":
            run = client.call("POST", "/api/script-runs", content=dumps(rec))
            state.run_id, state.key = run["id"], rec["key"]
            if run.get("status") not in (None, "running", "crashed"):
                state.finished = run["status"]
        elif kind == "resume":
            state.run_id, state.key = rec.pop("run_id"), rec["key"]
            client.call("POST", f"/api/runs/{state.run_id}/resume", content=dumps(rec))
        elif kind == "watch":
            state.layer_keys = rec.get("layer_keys")
            if state.run_id is not None:
                client.call(
                    "POST",
                    f"/api/runs/{state.run_id}/points",
                    key=state.key,
                    content=dumps({"layer_names": rec["layer_names"], "records": []}),
                )
        elif kind == "finish" and state.run_id is not None:
            run = client.call(
                "POST", f"/api/runs/{state.run_id}/finish", key=state.key, content=dumps(rec)
            )
            state.finished = run["status"]
    except Rejected as exc:
        state.skipped.append(f"{kind}: {exc}")
        if kind == "resume" and exc.status == 409 and "already succeeded" in exc.detail:
            return  # a later sync of a run that succeeded since: its points are refused too
    state.requests += 1


def read_lines(
    path: Path, offset: int = 0, max_bytes: int | None = None
) -> tuple[list[bytes], int]:
    """Whole lines of `path` from `offset` (at most about max_bytes); (lines, new offset)."""
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read() if max_bytes is None else f.read(max_bytes)
    end = data.rfind(b"\n") + 1  # a line still being written is left for next time
    lines = [ln for ln in data[:end].split(b"\n") if ln.strip()]
    return lines, offset + end


def sync(
    path: str | Path, url: str | None = None, token: str | None = None, client: Client | None = None
) -> Replay:
    """Send a whole spool file to the server (what `bnlab sync` does). Safe to repeat: the run
    is found again by its key and every point is stored once."""
    path = Path(path)
    own = client is None
    client = client or Client(
        url or os.environ.get("BNLAB_URL", "http://127.0.0.1:8000"),
        token or os.environ.get("BNLAB_API_TOKEN"),
    )
    state = Replay()
    try:
        lines, _ = read_lines(path)
        send_lines(client, lines, state)
    finally:
        if own:
            client.close()
    return state


class Spool:
    """An append-only JSON-lines file; appends from two threads are serialized."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.file = path.open("ab")

    def append(self, obj: Any) -> None:
        line = dumps(obj) + b"\n"
        with self.lock:
            self.file.write(line)
            self.file.flush()  # the OS has it: a killed process loses nothing written here

    def close(self) -> None:
        with self.lock:
            self.file.close()


class Sender(threading.Thread):
    """Sends the spool to the server from a background thread.

    The training thread only appends each record to the spool (one buffered write of a few KB
    per probe, into the page cache: it survives the process being killed, which a record held
    in a queue in memory would not) and wakes this thread. What is in flight is bounded by the
    file, not by memory: this thread reads at most MAX_BATCH_BYTES of it per request.
    """

    def __init__(
        self,
        spool: Spool,
        client: Client | None,
        *,
        heartbeat_s: float = 2.0,
        interval_s: float = 1.0,
        on_cancel: Callable[[], None] | None = None,
        step_of: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(name="bnlab-sender", daemon=True)
        self.spool, self.client = spool, client
        self.heartbeat_s, self.interval_s = heartbeat_s, interval_s
        self.on_cancel = on_cancel  # called once, from this thread, when a cancel is learned
        self.step_of = step_of  # the loop's step count (a plain int read: no lock, no sync)
        self.cancel_told = False
        self.state = Replay()
        self.offset = 0  # spool bytes the server has acknowledged (or refused for good)
        self.wake = threading.Event()
        self.created = threading.Event()  # the run exists on the server
        self.flush_asked = threading.Event()
        self.flushed = threading.Event()
        self.stopping = threading.Event()
        self.last_contact = 0.0
        self.backoff = 0.0
        self.next_try = 0.0
        self.last_error: str | None = None

    # -- training thread
    def put(self, record: Any) -> None:
        # No wake-up: the sender collects what the loop wrote once per interval_s and sends it
        # in one request. One request per probe cost a small MLP ~3 % of its training time on
        # CPU (an HTTP round trip is ~1-2 ms of Python); batched, ~0.1 %.
        self.spool.append(record)

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything spooled so far is sent (False: timed out, server away)."""
        self.flushed.clear()
        self.flush_asked.set()
        self.wake.set()
        return self.flushed.wait(timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        self.stopping.set()
        self.wake.set()
        self.join(timeout_s)

    # -- sender thread
    def run(self) -> None:
        while True:
            self.wake.wait(self.interval_s)
            self.wake.clear()
            forced = self.flush_asked.is_set()
            if self.client is not None:
                self._send(force=forced)
            if forced and (self.client is None or self._caught_up()):
                self.flush_asked.clear()
                self.flushed.set()
            if self.stopping.is_set():
                return
            if forced:  # finishing: retry every interval, not after the backoff
                time.sleep(self.interval_s)

    def _caught_up(self) -> bool:
        return self.offset >= self.spool.path.stat().st_size

    def _send(self, force: bool) -> None:
        now = time.monotonic()
        if now < self.next_try and not force:
            return
        try:
            while True:
                lines, end = read_lines(self.spool.path, self.offset, MAX_BATCH_BYTES)
                if not lines:
                    break
                send_lines(self.client, lines, self.state)
                self.offset = end
                self.last_contact = time.monotonic()
                if self.state.run_id is not None:
                    self.created.set()
            if self.state.run_id is not None and now - self.last_contact > self.heartbeat_s:
                # The loop's step moves the run's progress between probes (run.step on the
                # server stays the last probed one).
                body = None if self.step_of is None else dumps({"step": int(self.step_of())})
                beat = self.client.call(
                    "POST",
                    f"/api/runs/{self.state.run_id}/heartbeat",
                    key=self.state.key,
                    content=body,
                )
                self.last_contact = time.monotonic()
                if beat.get("cancel_requested"):
                    self.state.cancel_requested = True
            self.backoff, self.last_error = 0.0, None
        except Unreachable as exc:
            if self.last_error is None:
                log.warning("bnlab: server unreachable (%s); spooling to %s", exc, self.spool.path)
            self.last_error = str(exc)
            self.backoff = min(30.0, max(1.0, 2 * self.backoff))
            self.next_try = time.monotonic() + self.backoff
        except Rejected as exc:  # heartbeat refused: the run ended elsewhere (or key revoked)
            log.warning("bnlab: heartbeat refused: %s", exc)
            self.last_contact = time.monotonic()
        if self.state.cancel_requested and not self.cancel_told:
            self.cancel_told = True
            if self.on_cancel is not None:
                self.on_cancel()
