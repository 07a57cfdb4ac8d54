"""The FastAPI app: routers under /api, the static dashboard at / (SPA fallback), OpenAPI at
/docs. Plotly is frontend/vendor/plotly.min.js (plotly.js, MIT), vendored: clusters are often
offline, and the server needs no Python package to serve one JavaScript file."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response

from backend import reconcile
from backend.api import errors, static
from backend.api.auth import OPEN_PATHS, TokenGate
from backend.api.limits import UploadSizeLimit
from backend.api.routes import (
    compare,
    describe,
    exports,
    health,
    metrics,
    presets,
    runs,
    script_runs,
    stream,
    sweeps,
    uploads,
)
from backend.settings import settings

log = logging.getLogger(__name__)
FRONTEND_DIR = Path(
    os.environ.get("BNLAB_FRONTEND_DIR", Path(__file__).resolve().parents[2] / "frontend")
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The reaper/reconciler repairs runs from what the database says (worker lost, message lost).
    reconcile.start_background(app)
    yield
    reconcile.stop_background(app)


def api_router() -> APIRouter:
    router = APIRouter(prefix="/api", responses=errors.responses(400, 503))
    for module in (
        health,
        presets,
        runs,
        sweeps,
        metrics,
        compare,
        exports,
        uploads,
        stream,
        script_runs,
        describe,
    ):
        router.include_router(module.router)
    return router


def add_static(app: FastAPI) -> None:
    @app.get("/{path:path}", include_in_schema=False)
    def read_frontend(request: Request, path: str) -> Response:
        if path == "api" or path.startswith("api/"):
            # An API path that exists for other methods is a 405, not a page (e.g. GET /api/sweeps).
            methods = errors.allowed_methods(app, f"/{path}")
            if methods:
                raise HTTPException(
                    405, "Method Not Allowed", headers={"Allow": ", ".join(methods)}
                )
            raise HTTPException(404, f"no API endpoint /{path}")
        if not (FRONTEND_DIR / "index.html").is_file():
            raise HTTPException(404, "the dashboard is not installed (no frontend/index.html)")
        # Compressed files, client-side routes as index.html, a real 404 page for the rest.
        return static.frontend_response(request, FRONTEND_DIR, path)


HTTP_VERBS = ("get", "head", "post", "put", "patch", "delete")


def document_auth(app: FastAPI) -> None:
    """OpenAPI says what this server enforces: without BNLAB_API_TOKEN the bearer token of the
    write routes is optional (`security: [{}, {HTTPBearer: []}]`), with it, required; with
    BNLAB_AUTH_READS as well, every read but /api/health requires it and may answer 401."""
    build = app.openapi

    def openapi() -> dict:
        spec = build()
        optional = not settings.api_token
        reads_locked = bool(settings.api_token and settings.auth_reads)
        for path, item in spec.get("paths", {}).items():
            for method, op in item.items():
                if not isinstance(op, dict):
                    continue
                security = op.get("security")
                if security is not None:
                    op["security"] = [s for s in security if s] + ([{}] if optional else [])
                elif reads_locked and method in HTTP_VERBS and path not in OPEN_PATHS:
                    # BNLAB_AUTH_READS: backend/api/auth.py's TokenGate answers 401 here too.
                    op["security"] = [{"HTTPBearer": []}]
                    op.setdefault("responses", {}).setdefault(
                        "401",
                        {
                            "description": errors.WHY[401],
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/ErrorPublic"}
                                }
                            },
                        },
                    )
        return spec

    app.openapi = openapi


def create_app() -> FastAPI:
    app = FastAPI(
        title="bnlab",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs",
        description="Run, watch and compare Batch Normalization / Dropout experiments.",
    )
    errors.install(app)
    app.include_router(api_router())
    add_static(app)
    document_auth(app)
    app.add_middleware(UploadSizeLimit)
    app.add_middleware(TokenGate)  # outside the size limit: a stranger gets 401, not 413
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


app = create_app()
