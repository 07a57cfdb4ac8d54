"""The dashboard's static files: gzip-compressed once and kept in memory, the client-side routes
answered with index.html, and a real 404 page (status 404) for every other path.

Plotly alone is 4.8 MB; gzip makes it 1.4 MB, which is what a browser on a slow link waits for.
Compressing costs ~0.2 s once per file and process (the result is kept, keyed by the file's
size and mtime); the API's JSON is not compressed here: the compare view's answer is megabytes
spliced from cached bytes, and compressing it per request would cost more than it saves on the
local links the dashboard usually runs on.
"""

from __future__ import annotations

import gzip
import re
import threading
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response

# The views the dashboard's router knows (frontend/js/lib/router.js): anything else is a 404 page.
SPA_ROUTES = re.compile(r"^(|index\.html|compare/?|sweep/?|runs/[0-9]{1,10}/?)$")
COMPRESSIBLE = {".js", ".css", ".html", ".json", ".svg", ".map", ".txt"}
MEDIA = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".map": "application/json",
}
MIN_SIZE = 1024  # below this gzip's header outweighs the gain

_lock = threading.Lock()
_gzipped: dict[Path, tuple[tuple[int, int], bytes]] = {}


def _compressed(path: Path) -> bytes:
    stat = path.stat()
    stamp = (stat.st_size, stat.st_mtime_ns)
    with _lock:
        hit = _gzipped.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
    body = gzip.compress(path.read_bytes(), compresslevel=6, mtime=0)
    with _lock:
        _gzipped[path] = (stamp, body)
    return body


def accepts_gzip(request: Request) -> bool:
    encodings = request.headers.get("accept-encoding", "")
    return any(
        part.split(";")[0].strip() in ("gzip", "*") and not part.strip().endswith("q=0")
        for part in encodings.split(",")
    )


def file_response(
    request: Request, path: Path, *, status_code: int = 200, cache_control: str = "no-cache"
) -> Response:
    """`path`, gzipped when the client accepts it and the type compresses."""
    media = MEDIA.get(path.suffix)
    headers = {"Cache-Control": cache_control, "Vary": "Accept-Encoding"}
    if path.suffix in COMPRESSIBLE and path.stat().st_size >= MIN_SIZE and accepts_gzip(request):
        return Response(
            _compressed(path),
            status_code=status_code,
            media_type=media,
            headers={**headers, "Content-Encoding": "gzip"},
        )
    if status_code != 200:
        return Response(
            path.read_bytes(), status_code=status_code, media_type=media, headers=headers
        )
    return FileResponse(path, media_type=media, headers=headers)


# Browsers, feed readers and bookmark tools ask for /favicon.ico whatever the page links: the
# dashboard's icon is an SVG (frontend/favicon.svg), served at both names, so no page logs a 404.
FAVICON_ALIASES = {"favicon.ico": "favicon.svg"}


def frontend_response(request: Request, root: Path, path: str) -> Response:
    """A file under `root`, index.html for a client-side route, else 404.html with status 404."""
    root = root.resolve()
    alias = FAVICON_ALIASES.get(path)
    if alias and (root / alias).is_file():
        path = alias
    candidate = (root / path).resolve()
    if path and candidate.is_file() and root in candidate.parents:
        return file_response(request, candidate)
    if SPA_ROUTES.match(path):
        return file_response(request, root / "index.html")
    page = root / "404.html"
    if page.is_file():
        return file_response(request, page, status_code=404)
    return Response("not found", status_code=404, media_type="text/plain")
