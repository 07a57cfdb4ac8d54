"""Refuse an upload body past BNLAB_MAX_UPLOAD_MB while it streams in (413), before the
multipart parser has spooled it all to disk. crud.uploads checks the file size again."""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.settings import settings

OVERHEAD = 64 * 1024  # multipart boundaries and part headers around the file


class _BodyTooLarge(BaseException):
    # BaseException: FastAPI turns an Exception raised while parsing a form into a 400.
    pass


def _limit() -> int:
    return settings.max_upload_mb * 2**20 + OVERHEAD


async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
    body = {
        "detail": f"the upload is larger than the cap of {settings.max_upload_mb} MB "
        "(BNLAB_MAX_UPLOAD_MB)"
    }
    await JSONResponse(body, 413)(scope, receive, send)


class UploadSizeLimit:
    """ASGI middleware for POST requests under `prefix`."""

    def __init__(self, app: ASGIApp, prefix: str = "/api/datasets") -> None:
        self.app, self.prefix = app, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not scope["path"].startswith(self.prefix)
        ):
            return await self.app(scope, receive, send)
        limit = _limit()
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await _too_large(scope, receive, send)
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
                await _too_large(scope, receive, send)
