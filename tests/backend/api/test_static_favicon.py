"""The dashboard's icon: linked by every page (so Chromium logs no 404 for /favicon.ico, which it
did on every page before) and served at /favicon.ico too, for clients that ask without a link."""

from __future__ import annotations

from fastapi.testclient import TestClient

from backend.api import main


def test_favicon_linked_and_served_at_both_names():
    client = TestClient(main.create_app())
    for page in ("/", "/runs/1", "/no/such/page"):
        assert '<link rel="icon" href="/favicon.svg"' in client.get(page).text, page
    svg = client.get("/favicon.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    ico = client.get("/favicon.ico")
    assert ico.status_code == 200 and ico.content == svg.content
    assert ico.headers["content-type"].startswith("image/svg+xml")
