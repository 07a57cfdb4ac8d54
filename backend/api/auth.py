"""Who may call the API: checked in one ASGI middleware, before a route reads any body.

- BNLAB_API_TOKEN unset: everything is open (the embedded single-user default).
- BNLAB_API_TOKEN set: every write under /api (a route with `TokenDep`) needs
  `Authorization: Bearer <token>`. Checked before the body is parsed, so a write without a
  token answers 401 even when its body is malformed (a stranger learns nothing from a 422).
- BNLAB_AUTH_READS=1 as well: every request under /api needs the token (configs, series,
  exports with the trained weights, the event stream, POST /api/describe), except
  /api/health, which an orchestrator probes without secrets. Reads also accept the token in
  the `bnlab_token` cookie: a browser's EventSource and download links cannot send a header,
  and the dashboard sets that cookie from the token it asks for. Writes never accept the
  cookie, so another site cannot make a browser write with it (a cross-site read gets no
  response body to see).

The routes keep their `TokenDep` for the OpenAPI `security` entries and as a second check.
"""

from __future__ import annotations

import hmac
import json
import re
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import unquote

from starlette.types import ASGIApp, Receive, Scope, Send

from backend.settings import settings

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OPEN_PATHS = frozenset({"/api/health"})
COOKIE = "bnlab_token"
UNAUTHORIZED = json.dumps({"detail": "missing or wrong API token"}).encode()


def token_matches(given: str | None) -> bool:
    """Constant-time comparison with BNLAB_API_TOKEN (True when no token is configured)."""
    expected = settings.api_token
    if not expected:
        return True
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def bearer(scope: Scope) -> str | None:
    value = _header(scope, b"authorization")
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip()
    return None


def cookie_token(scope: Scope) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    try:
        morsel = SimpleCookie(raw).get(COOKIE)
    except Exception:  # noqa: BLE001 - a malformed cookie header is simply no token
        return None
    return unquote(morsel.value) if morsel else None  # the dashboard URI-encodes it


def _operation(app: Any, method: str, path: str) -> dict | None:
    """The OpenAPI operation a request goes to: a literal path first, then templates."""
    paths = app.openapi().get("paths", {})
    if method in paths.get(path, {}):
        return paths[path][method]
    for template, item in paths.items():
        if "{" in template and method in item:
            pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            if re.fullmatch(pattern, path):
                return item[method]
    return None


def route_needs_token(scope: Scope) -> bool:
    """Which writes need the token is declared once, by the routes (`dependencies=[TokenDep]`,
    which the OpenAPI operation shows as `security`); POST /api/describe, which stores
    nothing, has none. A write to no documented operation (a 404 or 405 to come) needs it
    too, so a stranger learns nothing about the paths."""
    op = _operation(scope["app"], scope["method"].lower(), scope["path"])
    return op is None or bool(op.get("security"))


def needs_token(scope: Scope) -> bool:
    """Whether this request must carry the token under the current settings."""
    method, path = scope["method"], scope["path"]
    if not settings.api_token or not (path == "/api" or path.startswith("/api/")):
        return False
    if settings.auth_reads:  # everything under /api but the open paths (and CORS preflights)
        return method != "OPTIONS" and path not in OPEN_PATHS
    return method not in READ_METHODS and route_needs_token(scope)


def authorized(scope: Scope) -> bool:
    method = scope["method"]
    if not needs_token(scope):
        return True
    if token_matches(bearer(scope)):
        return True
    return method in READ_METHODS and token_matches(cookie_token(scope))


class TokenGate:
    """401 (with `WWW-Authenticate: Bearer`) for an API request without the needed token."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or authorized(scope):
            await self.app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(UNAUTHORIZED)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": UNAUTHORIZED})
