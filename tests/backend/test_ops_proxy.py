"""The HTTPS reverse proxy of docs/operations.md (issue 27 item 5): Caddy (Debian's package)
runs the Caddyfile printed in that page, with its internal CA, in front of two real uvicorn API
processes started as compose starts them (--proxy-headers, FORWARDED_ALLOW_IPS); everything
on loopback."""

from __future__ import annotations

import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.utils.net import free_port
from tests.worker.procs import scratch_pg_database, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CADDY = shutil.which("caddy")
CLIENT = "127.0.0.2"  # the user's address: loopback is all of 127/8 on Linux


def documented_caddyfile() -> str:
    text = (ROOT / "docs" / "operations.md").read_text()
    found = re.search(r"```caddyfile\n(.*?)```", text, re.S)
    assert found, "docs/operations.md has no ```caddyfile block"
    return found.group(1)


class Proc:
    def __init__(self, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=str(ROOT), stdout=log.open("wb"), stderr=subprocess.STDOUT
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop()


@pytest.mark.skipif(CADDY is None, reason="no caddy (apt-get install caddy)")
def test_serve_two_api_replicas_over_https(procs: list[Proc], tmp_path: Path) -> None:
    """Breaks: users reach the API only through the HTTPS proxy; one of the two API replicas
    behind it is then killed.
    Must hold: TLS verifies against Caddy's internal CA (and fails without it); both replicas
    answer, each seeing the user's own address (uvicorn trusts the proxy's X-Forwarded-For),
    while a header forged by a client reaching a replica directly is ignored; after the kill
    every request still succeeds through the other replica."""
    env = {
        **os.environ,
        "FORWARDED_ALLOW_IPS": "127.0.0.1",  # what compose sets from BNLAB_FORWARDED_ALLOW_IPS
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    for name in ("BNLAB_API_TOKEN", "BNLAB_ARTIFACTS_URL", "BNLAB_BROKER_URL"):
        env.pop(name, None)
    with scratch_pg_database(prefix="bnlab_proxy_") as url:
        apis = []
        for i in (1, 2):
            port = free_port()
            cmd = [sys.executable, "-m", "uvicorn", "--factory", "backend.api.main:create_app"]
            api_env = {**env, "BNLAB_DATABASE_URL": url, "BNLAB_DATA_DIR": str(tmp_path / f"a{i}")}
            proc = Proc(
                [*cmd, "--host", "127.0.0.1", "--port", str(port), "--proxy-headers"],
                api_env,
                tmp_path / f"api{i}.log",
            )
            procs.append(proc)
            apis.append((proc, port))
        for _proc, port in apis:
            wait_for(
                lambda port=port: _answers(f"http://127.0.0.1:{port}/api/health"), 90, "the API"
            )

        https_port = free_port()
        (tmp_path / "Caddyfile").write_text(documented_caddyfile())
        caddy_env = {
            **env,
            "HOME": str(tmp_path),
            "XDG_DATA_HOME": str(tmp_path / "caddy-data"),
            "XDG_CONFIG_HOME": str(tmp_path / "caddy-config"),
            "BNLAB_SITE": "127.0.0.1",
            "BNLAB_UPSTREAMS": " ".join(f"127.0.0.1:{port}" for _, port in apis),
            "BNLAB_HTTPS_PORT": str(https_port),
            "BNLAB_HTTP_PORT": str(free_port()),
            "BNLAB_PROXY_BIND": "127.0.0.1",
            "BNLAB_CADDY_ADMIN": "off",
        }
        caddy = Proc(
            [CADDY, "run", "--config", str(tmp_path / "Caddyfile"), "--adapter", "caddyfile"],
            caddy_env,
            tmp_path / "caddy.log",
        )
        procs.append(caddy)
        ca = tmp_path / "caddy-data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
        base = f"https://127.0.0.1:{https_port}"

        def through_proxy() -> httpx.Client:
            verify = ssl.create_default_context(cafile=str(ca))
            transport = httpx.HTTPTransport(local_address=CLIENT, verify=verify)
            return httpx.Client(base_url=base, transport=transport, timeout=15)

        def ready() -> bool:
            assert caddy.proc.poll() is None, caddy.text()[-3000:]
            if not ca.exists():
                return False
            with through_proxy() as client:
                try:
                    return client.get("/api/health").status_code == 200
                except httpx.HTTPError:
                    return False

        wait_for(ready, 60, "Caddy to serve HTTPS", every=0.3)
        with pytest.raises(httpx.ConnectError):  # a CA the client does not know: refused
            httpx.get(f"{base}/api/health", timeout=5)

        with through_proxy() as client:
            answers = [client.get("/api/runs").status_code for _ in range(12)]
        assert answers == [200] * 12
        for proc, _ in apis:  # round robin reached both; each logged the user's address
            seen = re.findall(r'(\d+\.\d+\.\d+\.\d+):\d+ - "GET /api/runs', proc.text())
            assert seen and set(seen) == {CLIENT}, (proc.log.name, seen)

        # Straight to a replica from the user's address, with a forged header: not trusted.
        survivor, port = apis[1]
        forged = httpx.Client(transport=httpx.HTTPTransport(local_address=CLIENT), timeout=15)
        with forged:
            direct = forged.get(
                f"http://127.0.0.1:{port}/api/health?direct=1",
                headers={"X-Forwarded-For": "203.0.113.5"},
            )
        assert direct.status_code == 200
        logged = [line for line in survivor.text().splitlines() if "direct=1" in line]
        assert len(logged) == 1 and f"{CLIENT}:" in logged[0], logged

        apis[0][0].stop(signal.SIGKILL)
        with through_proxy() as client:
            answers = [client.get("/api/runs").status_code for _ in range(12)]
        assert answers == [200] * 12


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
