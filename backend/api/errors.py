"""Exception handlers: bad input is a 4xx that names the field, an unreachable database a 503.
Never a 500 for something the client can fix."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from bnlab.core.errors import Conflict, FieldError, NotFound, TooLarge

log = logging.getLogger(__name__)
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
DB_DOWN = {"detail": "database unavailable, retry shortly"}
DB_LOCKED = {"detail": "the SQLite database is locked by another writer; retry later"}


class ErrorPublic(BaseModel):
    """Every non-validation error body."""

    detail: str


class FieldErrorEntry(BaseModel):
    """One entry of a field-naming error body (422, and GET /api/compare's 404)."""

    loc: list[str | int]
    msg: str
    type: str
    field: str
    input: Any = None


class FieldErrorsPublic(BaseModel):
    """An error body that names fields: `detail` lists them."""

    detail: list[FieldErrorEntry]


WHY = {
    400: "malformed request (a body that is not JSON or multipart)",
    401: "missing or wrong API token (writes, when BNLAB_API_TOKEN is set)",
    404: "not found",
    409: "not possible in the run's current state",
    413: "larger than BNLAB_MAX_UPLOAD_MB",
    503: "database unavailable, retry shortly",
}


def responses(*codes: int) -> dict[int | str, dict]:
    """OpenAPI documentation of the error answers a route may give."""
    return {code: {"model": ErrorPublic, "description": WHY[code]} for code in codes}


def field_path(loc: tuple | list) -> str:
    """("body", "model", "dropout", "rate") → "model.dropout.rate" (the config's own path)."""
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in ("query", "path", "header", "cookie"):
        return parts[1]  # a parameter is one field, even a list (`runs.0` is `runs`)
    if parts and parts[0] == "body":
        parts = parts[1:] or parts
    return ".".join(parts)


def _entry(loc: list, msg: str, kind: str) -> dict:
    return {"loc": loc, "msg": msg, "type": kind, "field": field_path(loc)}


async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    paths = request.app.openapi().get("paths", {})
    item = paths.get(request.url.path)
    if item is not None and request.method.lower() not in item:
        # DELETE /api/runs/groups reached /api/runs/{run_id} and failed its int check: the
        # literal path has no such method, a 405 (the answer its schema documents).
        allow = ", ".join(sorted(m.upper() for m in item if m in HTTP_METHODS))
        return JSONResponse(
            {"detail": "Method Not Allowed"},
            status.HTTP_405_METHOD_NOT_ALLOWED,
            headers={"Allow": allow},
        )
    errors = [_entry(list(e["loc"]), e["msg"], e["type"]) for e in exc.errors()]
    message = "; ".join(f"{e['field']}: {e['msg']}" for e in errors)
    return JSONResponse(
        {"detail": errors, "message": message}, status.HTTP_422_UNPROCESSABLE_CONTENT
    )


async def on_field_error(_: Request, exc: FieldError) -> JSONResponse:
    entry = _entry([exc.location, *exc.field.split(".")], exc.reason, "value_error")
    return JSONResponse(
        {"detail": [entry], "message": exc.message}, status.HTTP_422_UNPROCESSABLE_CONTENT
    )


def _plain(code: int):
    async def handler(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": getattr(exc, "message", str(exc))}, code)

    return handler


async def on_db_down(_: Request, exc: Exception) -> JSONResponse:
    # SQLite's lock is not an outage: say what happened (a client retries either way).
    if "database is locked" in str(getattr(exc, "orig", exc)):
        log.warning("SQLite database locked past the busy timeout")
        return JSONResponse(
            DB_LOCKED, status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "5"}
        )
    log.warning("database unavailable: %s", type(exc).__name__)
    return JSONResponse(DB_DOWN, status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "5"})


async def on_db_data(_: Request, exc: DataError) -> JSONResponse:
    # A value the database cannot hold (out of range, bad encoding): the client's input. Shaped
    # like every other 422 (a field list), as the schema documents it.
    msg = "a value is out of range for the database"
    return JSONResponse(
        {"detail": [_entry(["body"], msg, "value_error")], "message": msg},
        status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI schema documents for `path` (templates like /api/runs/{run_id})."""
    paths = app.openapi().get("paths", {})
    if path in paths:  # a literal path (/api/runs/groups) is not also a run id's template
        return sorted(m.upper() for m in paths[path] if m in HTTP_METHODS)
    methods: set[str] = set()
    for template, item in paths.items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods |= {m.upper() for m in item if m in HTTP_METHODS}
    return sorted(methods)


async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's 405 lists only the first route's methods; list every method of the path."""
    headers = dict(exc.headers or {})
    if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
        headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
    return JSONResponse({"detail": exc.detail}, exc.status_code, headers=headers)


def install(app: FastAPI) -> None:
    """Register every handler on `app`."""
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(FieldError, on_field_error)
    app.add_exception_handler(NotFound, _plain(status.HTTP_404_NOT_FOUND))
    app.add_exception_handler(Conflict, _plain(status.HTTP_409_CONFLICT))
    app.add_exception_handler(TooLarge, _plain(status.HTTP_413_CONTENT_TOO_LARGE))
    app.add_exception_handler(DataError, on_db_data)
    app.add_exception_handler(OperationalError, on_db_down)
    app.add_exception_handler(InterfaceError, on_db_down)
    app.add_exception_handler(PoolTimeout, on_db_down)  # every pooled connection busy too long
