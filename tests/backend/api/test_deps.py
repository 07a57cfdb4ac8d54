"""Auth (TokenDep): with BNLAB_API_TOKEN set every write needs the bearer token; reads do not."""

from __future__ import annotations

import logging

import pytest

from tests.utils.runs import create_random_run, make_config

TOKEN = "s3cret-token-value"


@pytest.fixture
def token(monkeypatch):
    from backend.settings import settings

    monkeypatch.setattr(settings, "api_token", TOKEN)
    return TOKEN


def _writes(run_id: int) -> list[tuple[str, str, dict]]:
    return [
        ("POST", "/api/runs", {"json": make_config()}),
        ("POST", "/api/sweeps", {"json": {"base": make_config()}}),
        ("POST", f"/api/runs/{run_id}/cancel", {}),
        ("POST", f"/api/runs/{run_id}/retry", {}),
        ("DELETE", f"/api/runs/{run_id}", {}),
        ("POST", "/api/datasets", {"files": {"file": ("a.csv", b"a,label\n1,0\n", "text/csv")}}),
    ]


def test_write_without_token_is_401(client, session, token):
    """Every write endpoint answers 401 without a token."""
    run = create_random_run(session, status="queued")
    for method, path, kwargs in _writes(run.id):
        assert client.request(method, path, **kwargs).status_code == 401, path


def test_write_with_wrong_token_is_401(client, session, token):
    """A wrong token (even a prefix of the right one) is refused."""
    run = create_random_run(session, status="queued")
    for bad in ("nope", TOKEN[:-1], TOKEN + "x"):
        res = client.post(f"/api/runs/{run.id}/cancel", headers={"Authorization": f"Bearer {bad}"})
        assert res.status_code == 401


def test_write_with_token_succeeds(client, token):
    """The right bearer token lets a write through."""
    res = client.post("/api/runs", json=make_config(), headers={"Authorization": f"Bearer {TOKEN}"})
    assert res.status_code == 201


def test_read_without_token_is_allowed(client, session, token):
    """Reads stay open (the dashboard shows runs before asking for the token)."""
    run = create_random_run(session)
    assert client.get("/api/runs").status_code == 200
    assert client.get(f"/api/runs/{run.id}").status_code == 200


def test_token_never_echoed_or_logged(client, session, token, caplog):
    """Neither a refused nor an accepted token appears in a response body, header or log."""
    caplog.set_level(logging.DEBUG)
    bodies = [
        client.post("/api/runs", json=make_config(), headers={"Authorization": f"Bearer {TOKEN}x"}),
        client.post("/api/runs", json=make_config(), headers={"Authorization": f"Bearer {TOKEN}"}),
    ]
    for res in bodies:
        assert TOKEN not in res.text and TOKEN not in str(res.headers)
    assert TOKEN not in caplog.text


def test_token_compared_in_constant_time(monkeypatch, token):
    """The comparison goes through hmac.compare_digest."""
    import hmac

    from fastapi.security import HTTPAuthorizationCredentials

    from backend.api import auth, deps

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    deps.require_token(HTTPAuthorizationCredentials(scheme="Bearer", credentials=TOKEN))
    assert calls == [1]


def test_no_token_configured_allows_writes(client):
    """Without BNLAB_API_TOKEN writes need no header (the embedded laptop default)."""
    assert client.post("/api/runs", json=make_config()).status_code == 201
