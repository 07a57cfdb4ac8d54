"""The SDK's endpoints (issue 15): create a script run, stream its points, heartbeat, finish,
resume. Writes need the API token (when the server has one) and, for an existing run, one of
that run's keys in X-Bnlab-Run-Key, so a client can only ever write into its own runs: resume
too, which adds a new key only for a client that holds an old one (issue 21).

/points checks the key before it reads a byte of the body, then holds room in the ingest
memory budget while it reads, parses and stores it (backend/api/limits.py); on SQLite one
ingest writes at a time. Every refusal for load is a 503 with Retry-After that says which bound
was met (the SDK retries it)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, HTTPException, Path, Request, Response, status
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from backend.api import limits
from backend.api.deps import MAX_ID, RunDep, SessionDep, TokenDep
from backend.api.errors import responses
from backend.api.series_cache import cache as series_cache
from backend.crud import script_runs as crud
from backend.db.models import Run
from backend.settings import settings
from bnlab.core import wire
from bnlab.core.errors import TooLarge
from bnlab.core.registry import RUN_KEY_HEADER
from bnlab.core.schema.runs import RunPublic
from bnlab.core.schema.script_runs import (
    MAX_SUMMARY_BYTES,
    ExtraMetricsPublic,
    Heartbeat,
    HeartbeatPublic,
    IngestPublic,
    ScriptRunCreate,
    ScriptRunCreated,
    ScriptRunFinish,
    ScriptRunResume,
)

router = APIRouter(tags=["script runs"], responses=responses(401, 404, 409))
MAX_BODY = limits.MAX_INGEST_BODY  # one ingest request; MAX_LAYER_ROWS points are ~40 MB of JSON
RunId = Annotated[int, Path(ge=1, le=MAX_ID)]
RunKey = Annotated[
    str | None, Header(alias=RUN_KEY_HEADER, description="the run's key, as the SDK created it")
]
KEY_ERRORS = {
    403: {"description": "the run key belongs to another run"},
    413: {"description": "a body past its cap, or more records or points than one request takes"},
}
BUSY = {
    503: {
        "description": "the database is unavailable, or busy: the ingest memory bound, the one "
        "SQLite writer or a locked SQLite file (the detail says which; Retry-After says when)"
    }
}
SQLITE_LOCKED = ("database is locked", "database table is locked", "database is busy")


def _authorized(session: Session, run_id: int, key: str | None) -> Run:
    try:
        return crud.authorize(session=session, run_id=run_id, secret=key)
    except crud.KeyRejected as exc:
        raise HTTPException(exc.status, exc.message) from None


def _busy(exc: limits.Busy) -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, exc.message, headers=exc.headers())


@contextmanager
def _locked_is_busy(session: Session) -> Iterator[None]:
    """SQLite's "database is locked" (another writer held the file past the busy timeout) is a
    503 that says so: the database is there, only busy, and the client should come back."""
    try:
        yield
    except OperationalError as exc:
        if not any(s in str(exc.orig) for s in SQLITE_LOCKED):
            raise  # the database is really unreachable: errors.on_db_down
        session.rollback()
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"the SQLite database is locked by another writer (a worker or another request) "
            f"for longer than its busy timeout ({exc.orig}); nothing was stored, retry later",
            headers={"Retry-After": "5"},
        ) from None


@contextmanager
def _writer(session: Session) -> Iterator[None]:
    """On SQLite, the one writer slot of this process (limits.SqliteWriter: limits.Busy when it
    stays taken); PostgreSQL takes concurrent writers (the run's row lock orders one run's)."""
    with _locked_is_busy(session):
        if session.get_bind().dialect.name == "sqlite":
            with limits.sqlite_writer.slot():
                yield
        else:
            yield


@router.post(
    "/script-runs",
    response_model=ScriptRunCreated,
    status_code=status.HTTP_201_CREATED,
    dependencies=[TokenDep],
    responses={
        200: {"description": "the key's existing run"},
        413: {"description": "a body past its cap (config: MAX_CONFIG_BYTES of JSON)"},
    },
)
def create_script_run(session: SessionDep, body: ScriptRunCreate, response: Response) -> dict:
    """A run streamed from a user's own training loop (kind "script"), `running` from now.
    Idempotent by `key`: the same key again answers 200 with the run it created."""
    with _locked_is_busy(session):
        run, created = crud.create_script_run(session=session, body=body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return {**RunPublic.model_validate(run).model_dump(), "created": created}


@router.post(
    "/runs/{run_id}/resume",
    response_model=RunPublic,
    dependencies=[TokenDep],
    responses={
        403: {"description": "the key in X-Bnlab-Run-Key is not one of this run's"},
        413: {"description": "a body past 64 KiB"},
        409: {
            "description": "not a script run, already succeeded, or still alive (its client "
            "was heard from recently: Retry-After says when to try again)"
        },
    },
)
def resume_script_run(
    session: SessionDep, run: RunDep, body: ScriptRunResume, key: RunKey = None
) -> Run:
    """Continue a script run from a restarted script (`bnlab.init(resume=ID)`): running again,
    attempt + 1, the new key added to the run's keys; `total_steps` replaces the plan. Needs one
    of the run's existing keys in X-Bnlab-Run-Key (a new key that is already the run's proves
    itself: a spool's resume line sent again is a no-op). A run whose client was heard from in
    the last min(15 s, BNLAB_SCRIPT_TIMEOUT_S) is alive: 409 with Retry-After."""
    live_s = min(settings.script_timeout_s, crud.LIVE_S)
    try:
        with _locked_is_busy(session):
            resumed = crud.resume(
                session=session,
                run=run,
                secret=body.key,
                proof=key,
                total_steps=body.total_steps,
                live_s=live_s,
            )
    except crud.KeyRejected as exc:
        raise HTTPException(exc.status, exc.message) from None
    except crud.Alive as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            exc.message,
            headers={"Retry-After": str(math.ceil(exc.retry_after))},
        ) from None
    series_cache.drop_run(run.id)
    return resumed


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise TooLarge(f"body: {int(declared)} bytes; one request carries at most {MAX_BODY}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise TooLarge(f"body: more than {MAX_BODY} bytes in one request")
        chunks.append(chunk)
    return b"".join(chunks)


def _not_json(raw: bytes, exc: orjson.JSONDecodeError) -> str:
    """What is wrong with a JSON body, and where (the old message blamed NaN for anything)."""
    pos = exc.pos
    near = raw[max(0, pos - 24) : pos + 24].decode("utf-8", "replace")
    ahead = raw[pos : pos + 9].lstrip(b"-")
    hint = (
        "; NaN and infinity are not JSON numbers: send null"
        if ahead.startswith((b"NaN", b"Infinity", b"inf"))
        else ""
    )
    return (
        f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
        f"(byte {pos}), near {near!r}{hint}"
    )


@router.post(
    "/runs/{run_id}/points",
    response_model=IngestPublic,
    dependencies=[TokenDep],
    responses={**KEY_ERRORS, **responses(400), **BUSY},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["records"],
                        "properties": {
                            "layer_names": {"type": "array", "items": {"type": "string"}},
                            "records": {"type": "array", "items": {"type": "object"}},
                        },
                    }
                },
                wire.MEDIA_TYPE: {
                    "schema": {
                        "type": "string",
                        "format": "binary",
                        "description": "layer points as arrays (bnlab/core/wire.py)",
                    }
                },
            },
        }
    },
)
async def ingest_points(
    request: Request, session: SessionDep, run_id: RunId, key: RunKey = None
) -> dict:
    """A batch of probe records: {"records": [{"step", "metrics", "layers"}], "layer_names"?,
    "layer_keys"?} as JSON, or the same as arrays (application/x-bnlab-columns, what the SDK
    sends: ~5x less server work per point). Idempotent by (run, step): a re-sent batch stores
    every point once. The answer carries the run's status, progress and cancel_requested.
    The run key is checked before the body is read; a server at its ingest memory bound (or
    its one SQLite writer busy) answers 503 with Retry-After."""

    def check_key() -> Run:
        run = _authorized(session, run_id, key)
        session.commit()  # no read transaction held open while the body streams in
        return run

    run = await run_in_threadpool(check_key)  # strangers get nothing read, nothing parsed
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise TooLarge(f"body: {int(declared)} bytes; one request carries at most {MAX_BODY}")

    def store(raw: bytes) -> dict:
        if request.headers.get("content-type", "").startswith(wire.MEDIA_TYPE):
            batch = crud.parse_columns_batch(run_id, raw)
        else:
            try:
                payload = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise HTTPException(status.HTTP_400_BAD_REQUEST, _not_json(raw, exc)) from None
            batch = crud.parse_batch(run_id, payload)
            del payload  # the parsed document can be several times the body's size
        with _writer(session):
            session.refresh(run)  # its status may have changed while the body came in
            return crud.ingest(session=session, run=run, batch=batch)

    try:
        # Room for the whole body (its declared length; the cap when it does not say) from
        # before the first byte is read until the batch is stored.
        async with limits.ingest_budget.hold(int(declared) if declared.isdigit() else MAX_BODY):
            raw = await _body(request)
            return await run_in_threadpool(store, raw)
    except limits.Busy as exc:
        raise _busy(exc) from None


@router.post(
    "/runs/{run_id}/heartbeat",
    response_model=HeartbeatPublic,
    dependencies=[TokenDep],
    responses=KEY_ERRORS,
)
def heartbeat(
    session: SessionDep, run_id: RunId, body: Heartbeat | None = None, key: RunKey = None
) -> dict:
    """The client is alive (the SDK sends one every few seconds while it has nothing to send).
    With {"step"} the run's progress moves to that step (when the run has total_steps). The
    answer says whether someone pressed Cancel: the SDK then stops the loop."""
    run = _authorized(session, run_id, key)
    with _locked_is_busy(session):
        run = crud.heartbeat(session=session, run=run, step=body.step if body else None)
    return {
        "status": run.status,
        "cancel_requested": run.cancel_requested,
        "progress": run.progress or 0.0,
    }


@router.post(
    "/runs/{run_id}/finish",
    response_model=RunPublic,
    dependencies=[TokenDep],
    responses={
        **KEY_ERRORS,
        413: {"description": f"a body past the summary's cap ({MAX_SUMMARY_BYTES} bytes)"},
    },
)
def finish(session: SessionDep, run_id: RunId, body: ScriptRunFinish, key: RunKey = None) -> Run:
    """How the script ended: succeeded, failed (an exception, with its message), cancelled
    (Ctrl-C) or diverged. The same end twice is a no-op. `summary` holds at most
    MAX_SUMMARY_BYTES of JSON (422 naming summary; a body far past it is a 413)."""
    run = _authorized(session, run_id, key)
    with _locked_is_busy(session):
        run = crud.finish(session=session, run=run, body=body)
    series_cache.drop_run(run_id)
    return run


@router.get(
    "/runs/{run_id}/extra-metrics",
    response_model=ExtraMetricsPublic,
    tags=["metrics"],
    responses=responses(404),
)
def read_extra_metrics(session: SessionDep, run: RunDep) -> dict:
    """Scalar metrics a script logged under its own names (outside the fixed metric keys)."""
    return {"metrics": crud.read_extra_metrics(session=session, run_id=run.id)}
