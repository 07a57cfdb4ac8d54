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
  {"type": "resume", "run_id", "key", "held_key"?, "total_steps"?}        (bnlab.init(resume=))
  {"type": "watch", "layer_names": [...], "layer_keys": [...]}
  {"step": ..., "metrics": {...}, "layers": [[one value per layer key] | null, ...]}
      (one probe: the ingest record format as is, so a batch is these lines joined)
  {"type": "finish", "status", "summary", "error"}

A damaged spool loses only its damaged lines (issue 21): a line that is not JSON, or a record
the server refuses (a batch refused as a whole is split until the refused records are alone),
is skipped and reported with its line number; everything else is stored; and the finish line
is not sent while any line was refused, so the run stays open for a later `bnlab sync` of the
repaired spool, which completes it.

Resuming a run needs one of its keys (the server refuses a stranger's resume): every key a run
gets is remembered in KEYS_FILE beside the spools, where bnlab.init(resume=ID) and `bnlab sync`
find it again (or BNLAB_RUN_KEY gives it).
"""

from __future__ import annotations

import functools
import importlib.util
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

from bnlab.core.registry import COLUMNS_MEDIA_TYPE as COLUMNS
from bnlab.core.registry import RUN_KEY_HEADER

# With NumPy (it comes with most torch installs) layer points go as arrays, ~5x less server
# work; without it (a bare client install) the same records go as JSON. Looked up, not
# imported: `import bnlab` stays as cheap as importing httpx (the encoder loads at first send).
HAVE_NUMPY = importlib.util.find_spec("numpy") is not None


@functools.cache
def _columns_encoder() -> Callable[..., bytes] | None:
    if not HAVE_NUMPY:
        return None
    from bnlab.core import wire  # NumPy, an optional dependency: imported at first use

    return wire.encode


log = logging.getLogger("bnlab")
MAX_BATCH_BYTES = 8 * 2**20  # one ingest request (the server takes up to 64 MB)
MAX_BATCH_RECORDS = 5_000  # the server takes up to 10,000
SPLIT_ON = (400, 413, 422)  # a batch refused for what it holds: split it, find the bad records
KEYS_FILE = "keys.txt"  # beside the spools: one {"url", "run_id", "key"} per line
RESUME_WAIT_S = 20.0  # how long init(resume=) waits for a run's last client to fall silent


class Rejected(Exception):
    """The server refused a request for good (a 4xx other than 408/429): don't retry it.
    retry_after: the server's Retry-After, when it said when trying again may succeed (a
    resume of a run whose client was heard from just now)."""

    def __init__(self, status: int, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail, self.retry_after = status, detail, retry_after


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
            after = resp.headers.get("retry-after", "")
            retry = float(after) if after.isdigit() else None
            raise Rejected(resp.status_code, _detail(resp), retry)
        return resp.json()


# ----------------------------------------------------------------------------- run keys


def remember_key(directory: Path, url: str, run_id: int, key: str) -> None:
    """Keep `key` as one of run `run_id`'s keys on `url` (owner-only file beside the spools)."""
    path = directory / KEYS_FILE
    entry = {"url": url.rstrip("/"), "run_id": int(run_id), "key": key}
    if entry in _keys(path):
        return
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as f:
        f.write(dumps(entry) + b"\n")  # one short write with O_APPEND: never interleaved


def _keys(path: Path) -> list[dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except OSError:
        return []
    out = []
    for line in raw.splitlines():
        try:
            entry = loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("key"), str):
            out.append(entry)
    return out


def held_key(directory: Path | None, url: str | None, run_id: int) -> str | None:
    """A key of run `run_id` this machine holds: BNLAB_RUN_KEY, else the newest remembered in
    `directory`'s KEYS_FILE (one remembered for `url` before one for another address)."""
    if os.environ.get("BNLAB_RUN_KEY"):
        return os.environ["BNLAB_RUN_KEY"]
    if directory is None:
        return None
    mine = [e for e in _keys(directory / KEYS_FILE) if e.get("run_id") == run_id]
    if url is not None:
        mine.sort(key=lambda e: e.get("url") == url.rstrip("/"))  # stable: newest last
    return mine[-1]["key"] if mine else None


def resume_run(
    client: Client,
    run_id: int,
    key: str,
    plan: dict[str, Any],
    held: str | None,
    wait_s: float = RESUME_WAIT_S,
) -> dict[str, Any]:
    """POST /api/runs/{run_id}/resume adding `key`, proving the right with `held` (one of the
    run's keys). A run whose last client was heard from moments ago (a script restarted right
    after it crashed) is a 409 with Retry-After: waited out, up to wait_s."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return client.call(
                "POST", f"/api/runs/{run_id}/resume", content=dumps({"key": key, **plan}), key=held
            )
        except Rejected as exc:
            wait = exc.retry_after
            if exc.status == 409 and wait and time.monotonic() + wait <= deadline:
                log.warning("bnlab: %s; waiting %.0f s", exc.detail, wait)
                time.sleep(wait)
                continue
            if exc.status in (401, 403) and held is None:
                raise Rejected(
                    exc.status,
                    f"{exc.detail}; no key of run {run_id} here (the spool folder's "
                    f"{KEYS_FILE} of the machine that ran it has one): set BNLAB_RUN_KEY",
                ) from None
            raise


# ----------------------------------------------------------------------------- replay


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
    refused: int = 0  # lines (records) not stored: unreadable, or refused by the server
    notes: list[str] = field(default_factory=list)  # said, but nothing was lost
    ended_before: str | None = None  # the run had already ended when this replay met it
    not_sent: int = 0  # records not sent because of that
    spool_end: str | None = None  # the spool's own finish line
    withheld: str | None = None  # a finish not sent because lines were refused
    keys_dir: Path | None = None  # where the run's keys are remembered (None: nowhere)
    _refused_lines: set[int] = field(default_factory=set)

    def refuse(self, where: str, reason: str, n: int = 1, lines: tuple[int, ...] = ()) -> None:
        if lines and set(lines) <= self._refused_lines:
            return  # the same lines again (a chunk re-sent after the server went away)
        self._refused_lines.update(lines)
        self.skipped.append(f"{where}: {reason}")
        self.refused += n

    @property
    def complete(self) -> bool:
        """Everything in the spool is on the server (or was there before)."""
        return self.refused == 0


def _where(numbers: list[int]) -> str:
    if len(numbers) == 1:
        return f"line {numbers[0]}"
    return f"lines {numbers[0]}-{numbers[-1]} ({len(numbers)} records)"


def send_lines(
    client: Client, lines: list[bytes], state: Replay, numbers: list[int] | None = None
) -> None:
    """Send consecutive spool lines in order (probe lines batched); raises Unreachable to stop
    (the caller keeps its offset before `lines`). What cannot be read, or what the server
    refuses, is recorded in state.skipped by line number (`numbers`: each line's number in
    its file; default 1, 2, ...) and the rest goes on."""
    numbers = numbers or list(range(1, len(lines) + 1))
    batch: list[tuple[int, bytes, dict[str, Any]]] = []
    size = 0

    def flush() -> None:
        nonlocal batch, size
        if batch:
            _post_records(client, state, batch)
        batch, size = [], 0

    for no, line in zip(numbers, lines, strict=True):
        try:
            rec = loads(line)
        except ValueError as exc:  # a torn or damaged line
            state.refuse(f"line {no}", f"not JSON ({exc})", lines=(no,))
            continue
        if not isinstance(rec, dict):
            state.refuse(f"line {no}", "not a JSON object", lines=(no,))
            continue
        if "type" in rec:
            flush()
            _control(client, state, rec, no)
            continue
        step = rec.get("step")
        if type(step) is not int or step < 0:
            state.refuse(f"line {no}", "a probe record without a whole step >= 0", lines=(no,))
            continue
        batch.append((no, line, rec))
        size += len(line)
        if len(batch) >= MAX_BATCH_RECORDS or size >= MAX_BATCH_BYTES:
            flush()
    flush()


def _post_records(client: Client, state: Replay, batch: list[tuple[int, bytes, dict]]) -> None:
    numbers = [no for no, _, _ in batch]
    if state.run_id is None:
        state.refuse(_where(numbers), "records before any run line", len(batch), tuple(numbers))
        return
    if state.ended_before is not None:
        state.not_sent += len(batch)  # sync() says whether that lost anything
        return
    try:
        _post_points(client, state, batch)
    except Rejected as exc:
        if exc.status in SPLIT_ON and len(batch) > 1:
            # Refused for what it holds: halves until the refused records stand alone, so one
            # bad record costs ~2 log2(batch) requests, not the batch.
            half = len(batch) // 2
            _post_records(client, state, batch[:half])
            _post_records(client, state, batch[half:])
            return
        state.refuse(_where(numbers), f"refused: {exc}", len(batch), tuple(numbers))


def _post_points(client: Client, state: Replay, batch: list[tuple[int, bytes, dict]]) -> None:
    body, media = None, "application/json"
    encode = _columns_encoder()
    if state.layer_keys and encode is not None:
        try:
            body, media = encode([rec for _, _, rec in batch], state.layer_keys), COLUMNS
        except (ValueError, TypeError):  # a malformed record: JSON lets the server name it
            body = None
    if body is None:
        head = b'{"layer_keys":' + dumps(state.layer_keys) + b"," if state.layer_keys else b"{"
        body = head + b'"records":[' + b",".join(line for _, line, _ in batch) + b"]}"
        media = "application/json"
    state.requests += 1
    answer = client.call(
        "POST", f"/api/runs/{state.run_id}/points", content=body, key=state.key, media=media
    )
    state.records += len(batch)
    if isinstance(answer, dict) and answer.get("cancel_requested"):
        state.cancel_requested = True


def _remember(state: Replay, client: Client) -> None:
    if state.keys_dir is not None and state.run_id is not None and state.key:
        try:
            remember_key(state.keys_dir, client.url, state.run_id, state.key)
        except OSError as exc:  # a read-only folder: resuming then needs BNLAB_RUN_KEY
            log.warning("bnlab: cannot keep run %s's key in %s: %s", state.run_id, KEYS_FILE, exc)


def _control(client: Client, state: Replay, rec: dict[str, Any], no: int) -> None:
    kind = rec.pop("type")
    try:
        if kind == "run":
            state.requests += 1
            run = client.call("POST", "/api/script-runs", content=dumps(rec))
            state.run_id, state.key = run["id"], rec["key"]
            _remember(state, client)
            if run.get("status") not in (None, "running", "crashed"):
                state.finished = state.ended_before = run["status"]
        elif kind == "resume":
            state.run_id, state.key = rec.pop("run_id"), rec["key"]
            proof = rec.pop("held_key", None) or held_key(state.keys_dir, client.url, state.run_id)
            state.requests += 1
            client.call("POST", f"/api/runs/{state.run_id}/resume", content=dumps(rec), key=proof)
            _remember(state, client)
        elif kind == "watch":
            state.layer_keys = rec.get("layer_keys")
            if state.run_id is not None and state.ended_before is None:
                state.requests += 1
                client.call(
                    "POST",
                    f"/api/runs/{state.run_id}/points",
                    key=state.key,
                    content=dumps({"layer_names": rec["layer_names"], "records": []}),
                )
        elif kind == "finish":
            _finish(client, state, rec, no)
        else:
            state.refuse(f"line {no}", f"unknown line type {kind!r}", lines=(no,))
    except Rejected as exc:
        if kind == "resume" and exc.status == 409 and "already succeeded" in exc.detail:
            # a later sync of a run that succeeded since: its points are not sent
            state.finished = state.ended_before = "succeeded"
            return
        state.refuse(f"line {no}", f"{kind} refused: {exc}", lines=(no,))
    except (KeyError, TypeError) as exc:  # a control line missing its fields
        state.refuse(f"line {no}", f"a {kind} line without {exc}", lines=(no,))


def _finish(client: Client, state: Replay, rec: dict[str, Any], no: int) -> None:
    state.spool_end = rec.get("status")
    if state.run_id is None:
        state.refuse(f"line {no}", "finish before any run line", lines=(no,))
        return
    if state.ended_before is not None:
        return  # sync() compares the two ends
    if state.refused:
        # Never end a run whose records were refused: it stays open (crashed once its client
        # is silent), and a sync of the repaired spool stores them and ends it then.
        state.withheld = state.spool_end
        state.skipped.append(
            f"line {no}: finish ({state.spool_end}) not sent: {state.refused} line(s) were not "
            f"stored; run {state.run_id} stays open: repair the spool and `bnlab sync` it again"
        )
        log.warning("bnlab: %s", state.skipped[-1])
        return
    state.requests += 1
    run = client.call("POST", f"/api/runs/{state.run_id}/finish", key=state.key, content=dumps(rec))
    state.finished = run["status"]


def read_spool(
    path: Path, offset: int = 0, max_bytes: int | None = None, first_line: int = 1
) -> tuple[list[bytes], list[int], int, int]:
    """Whole lines of `path` from `offset` (at most about max_bytes), blank ones left out:
    (lines, their line numbers counting from first_line, new offset, next line number)."""
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read() if max_bytes is None else f.read(max_bytes)
    end = data.rfind(b"\n") + 1  # a line still being written is left for next time
    lines, numbers = [], []
    for i, line in enumerate(data[:end].split(b"\n")[:-1]):
        if line.strip():
            lines.append(line)
            numbers.append(first_line + i)
    return lines, numbers, offset + end, first_line + data[:end].count(b"\n")


def read_lines(
    path: Path, offset: int = 0, max_bytes: int | None = None
) -> tuple[list[bytes], int]:
    """Whole lines of `path` from `offset` (at most about max_bytes); (lines, new offset)."""
    lines, _, end, _ = read_spool(path, offset, max_bytes)
    return lines, end


def sync(
    path: str | Path, url: str | None = None, token: str | None = None, client: Client | None = None
) -> Replay:
    """Send a whole spool file to the server (what `bnlab sync` does). Safe to repeat: the run
    is found again by its key and every point is stored once. `Replay.complete` is False when
    anything was not stored (`skipped` says what, by line); the run is then left open."""
    path = Path(path)
    own = client is None
    client = client or Client(
        url or os.environ.get("BNLAB_URL", "http://127.0.0.1:8000"),
        token or os.environ.get("BNLAB_API_TOKEN"),
    )
    state = Replay(keys_dir=path.parent)
    try:
        lines, numbers, _, _ = read_spool(path)
        send_lines(client, lines, state, numbers)
    finally:
        if own:
            client.close()
    if state.ended_before is not None:
        if state.spool_end == state.ended_before:
            state.notes.append(
                f"run {state.run_id} already ended {state.ended_before}, as this spool ends it: "
                "nothing to send"
            )
        elif state.not_sent:
            ends = "" if state.spool_end is None else f"; this spool ends it {state.spool_end}"
            state.refuse(
                f"{state.not_sent} records",
                f"run {state.run_id} had already ended ({state.ended_before}) before this "
                f"sync{ends}: they were not stored",
                state.not_sent,
            )
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
        self.state = Replay(keys_dir=spool.path.parent)  # the run's keys kept beside the spool
        self.offset = 0  # spool bytes the server has acknowledged (or refused for good)
        self.line_no = 1  # the spool line at self.offset (refusals are reported by line)
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
                lines, numbers, end, next_line = read_spool(
                    self.spool.path, self.offset, MAX_BATCH_BYTES, self.line_no
                )
                if end == self.offset:
                    break
                send_lines(self.client, lines, self.state, numbers)
                self.offset, self.line_no = end, next_line
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
