"""The SDK's endpoints (issue 15): create a script run, stream its points, heartbeat, finish,
resume. Writes need the API token (when the server has one) and, for an existing run, one of
that run's keys in X-Bnlab-Run-Key, so a client can only ever write into its own runs."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Header, HTTPException, Path, Request, Response, status
from starlette.concurrency import run_in_threadpool

from backend.api.deps import MAX_ID, RunDep, SessionDep, TokenDep
from backend.api.errors import responses
from backend.api.series_cache import cache as series_cache
from backend.crud import script_runs as crud
from backend.db.models import Run
from bnlab.core import wire
from bnlab.core.errors import TooLarge
from bnlab.core.registry import RUN_KEY_HEADER
from bnlab.core.schema.runs import RunPublic
from bnlab.core.schema.script_runs import (
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
MAX_BODY = 64 * 2**20  # one ingest request; MAX_LAYER_ROWS points are ~40 MB of JSON
RunId = Annotated[int, Path(ge=1, le=MAX_ID)]
RunKey = Annotated[
    str | None, Header(alias=RUN_KEY_HEADER, description="the run's key, as the SDK created it")
]
KEY_ERRORS = {
    403: {"description": "the run key belongs to another run"},
    413: {"description": "more records or points than one request may carry"},
}


def _authorized(session, run_id: int, key: str | None) -> Run:  # noqa: ANN001
    try:
        return crud.authorize(session=session, run_id=run_id, secret=key)
    except crud.KeyRejected as exc:
        raise HTTPException(exc.status, exc.message) from None


@router.post(
    "/script-runs",
    response_model=ScriptRunCreated,
    status_code=status.HTTP_201_CREATED,
    dependencies=[TokenDep],
    responses={200: {"description": "the key's existing run"}},
)
def create_script_run(session: SessionDep, body: ScriptRunCreate, response: Response) -> dict:
    """A run streamed from a user's own training loop (kind "script"), `running` from now.
    Idempotent by `key`: the same key again answers 200 with the run it created."""
    run, created = crud.create_script_run(session=session, body=body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return {**RunPublic.model_validate(run).model_dump(), "created": created}


@router.post("/runs/{run_id}/resume", response_model=RunPublic, dependencies=[TokenDep])
def resume_script_run(session: SessionDep, run: RunDep, body: ScriptRunResume) -> Run:
    """Continue a script run from a restarted script (`bnlab.init(resume=ID)`): running again,
    attempt + 1, the new key added to the run's keys; `total_steps` replaces the plan."""
    resumed = crud.resume(session=session, run=run, secret=body.key, total_steps=body.total_steps)
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


@router.post(
    "/runs/{run_id}/points",
    response_model=IngestPublic,
    dependencies=[TokenDep],
    responses={**KEY_ERRORS, **responses(400)},
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
    every point once. The answer carries the run's status, progress and cancel_requested."""
    raw = await _body(request)

    def store() -> dict:
        run = _authorized(session, run_id, key)  # before parsing: strangers get nothing parsed
        if request.headers.get("content-type", "").startswith(wire.MEDIA_TYPE):
            return crud.ingest(
                session=session, run=run, batch=crud.parse_columns_batch(run_id, raw)
            )
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                f"body is not valid JSON (NaN and infinity are not JSON; send null): {exc}",
            ) from None
        return crud.ingest(session=session, run=run, batch=crud.parse_batch(run_id, payload))

    return await run_in_threadpool(store)


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
    run = crud.heartbeat(session=session, run=run, step=body.step if body else None)
    return {
        "status": run.status,
        "cancel_requested": run.cancel_requested,
        "progress": run.progress or 0.0,
    }


@router.post(
    "/runs/{run_id}/finish", response_model=RunPublic, dependencies=[TokenDep], responses=KEY_ERRORS
)
def finish(session: SessionDep, run_id: RunId, body: ScriptRunFinish, key: RunKey = None) -> Run:
    """How the script ended: succeeded, failed (an exception, with its message), cancelled
    (Ctrl-C) or diverged. The same end twice is a no-op."""
    run = crud.finish(session=session, run=_authorized(session, run_id, key), body=body)
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
