"""The app shell: static dashboard with SPA fallback, Plotly from the wheel, OpenAPI, CORS."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from backend.api import main


@pytest.fixture
def frontend(tmp_path, monkeypatch):
    (tmp_path / "index.html").write_text("<html>INDEX</html>")
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "app.js").write_text("export const x = 1;")
    (tmp_path.parent / "secret.txt").write_text("SECRET")
    monkeypatch.setattr(main, "FRONTEND_DIR", tmp_path)
    return tmp_path


def test_serve_index_at_root(frontend):
    """/ serves frontend/index.html."""
    assert "INDEX" in TestClient(main.create_app()).get("/").text


@pytest.mark.parametrize("path", ["/compare?runs=1,2", "/runs/7", "/sweep?sweep=3", "/runs/7/"])
def test_serve_index_for_client_routes(frontend, path):
    """Client-side routes fall back to index.html (shareable /compare and /runs/ID links)."""
    res = TestClient(main.create_app()).get(path)
    assert res.status_code == 200 and "INDEX" in res.text


@pytest.mark.parametrize("path", ["/some/client/route", "/runs/abc", "/compare/x", "/nothing.js"])
def test_unknown_path_is_404_page(frontend, path):
    """A path the dashboard has no view for answers the 404 page with status 404."""
    (frontend / "404.html").write_text("<html>NOT FOUND PAGE</html>")
    res = TestClient(main.create_app()).get(path)
    assert res.status_code == 404 and "NOT FOUND PAGE" in res.text and "INDEX" not in res.text


def test_static_files_gzipped(frontend):
    """Text files are sent gzip-compressed to clients that accept it, plain to others."""
    body = "export const big = [" + ",".join(str(i) for i in range(5000)) + "];"
    (frontend / "js" / "big.js").write_text(body)
    client = TestClient(main.create_app())
    raw = client.get("/js/big.js", headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip" and raw.text == body
    assert "accept-encoding" in raw.headers["vary"].lower()
    plain = client.get("/js/big.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.text == body


def test_serve_static_file(frontend):
    """A real file under frontend/ is served as itself."""
    assert TestClient(main.create_app()).get("/js/app.js").text == "export const x = 1;"


def test_serve_refuses_traversal(frontend):
    """A path escaping frontend/ never serves the outside file."""
    client = TestClient(main.create_app())
    for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/js/%2e%2e/%2e%2e/secret.txt"):
        assert "SECRET" not in client.get(path).text


def test_unknown_api_path_is_json_404(frontend):
    """/api/<unknown> is a 404, not the dashboard."""
    res = TestClient(main.create_app()).get("/api/nothing")
    assert res.status_code == 404 and "INDEX" not in res.text


def test_serve_vendored_plotly():
    """/vendor/plotly.min.js is the vendored plotly.js (no CDN, no Python package), sent
    gzipped: 4.8 MB down to about 1.4 MB on the wire."""
    vendored = main.FRONTEND_DIR / "vendor" / "plotly.min.js"
    client = TestClient(main.create_app())
    res = client.get("/vendor/plotly.min.js", headers={"Accept-Encoding": "identity"})
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/javascript")
    assert res.content == vendored.read_bytes() and b"plotly.js v" in res.content[:200]
    zipped = client.get("/vendor/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert int(zipped.headers["content-length"]) < 0.4 * vendored.stat().st_size


def test_openapi_docs_served():
    """/docs and the OpenAPI schema list every endpoint of docs/design.md."""
    client = TestClient(main.create_app())
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/health",
        "/api/presets",
        "/api/runs",
        "/api/sweeps",
        "/api/runs/{run_id}",
        "/api/runs/{run_id}/metrics",
        "/api/runs/{run_id}/layers",
        "/api/runs/{run_id}/cancel",
        "/api/runs/{run_id}/retry",
        "/api/runs/{run_id}/export",
        "/api/datasets",
        "/api/events",
    ):
        assert path in paths, path


def test_cors_from_settings(monkeypatch):
    """An origin listed in BNLAB_CORS_ORIGINS gets CORS headers; another does not."""
    from backend.settings import settings

    monkeypatch.setattr(settings, "cors_origins", ["http://lab.example"])
    client = TestClient(main.create_app())
    ok = client.options(
        "/api/presets",
        headers={"Origin": "http://lab.example", "Access-Control-Request-Method": "GET"},
    )
    assert ok.headers.get("access-control-allow-origin") == "http://lab.example"
    other = client.get("/api/presets", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_startup_starts_and_stops_reconciler(monkeypatch):
    """The app's lifespan starts backend.reconcile's background loop and stops it on shutdown."""
    from backend import reconcile

    calls = []
    monkeypatch.setattr(reconcile, "start_background", lambda app: calls.append(("start", app)))
    monkeypatch.setattr(reconcile, "stop_background", lambda app: calls.append(("stop", app)))
    app = main.create_app()
    with TestClient(app):
        assert calls == [("start", app)]
    assert calls == [("start", app), ("stop", app)]
