"""What the integration tests share: a real `bnlab serve` (SQLite + the embedded broker) and a
few reads of it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.bnlab.sdk.servers import Server, make_server


@contextmanager
def sqlite_server(data_dir: Path) -> Iterator[Server]:
    server = make_server(data_dir).start()
    try:
        yield server
    finally:
        server.stop()


def get(server: Server, path: str, **params) -> dict:
    resp = httpx.get(f"{server.url}{path}", params=params, timeout=30)
    resp.raise_for_status()
    return resp.json()


def runs_named(server: Server, name: str) -> list[dict]:
    return [r for r in get(server, "/api/runs", text=name, limit=100)["data"] if r["name"] == name]
