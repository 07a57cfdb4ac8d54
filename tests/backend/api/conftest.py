"""Fixtures shared by the API tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from backend.api.main import create_app
from tests.utils.net import free_port


@pytest.fixture(scope="module")
def server(api_db) -> Iterator[str]:
    """A real uvicorn server for the module (streaming responses need one: the test client
    buffers them), on a free loopback port, in a thread, on this session's database."""
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(
            create_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)
