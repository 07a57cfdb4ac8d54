"""The client installs anywhere a researcher trains: `pip install bnlab` (no extra) in a fresh
venv on each Python from 3.10 to 3.13 gets the SDK and nothing of the server, streams a run to
a real `bnlab serve`, and resolves beside the older releases of the libraries a training box
commonly pins.

Each venv installs the wheel built from this checkout; its dependencies come from the package
index (the client's ranges, not the lock file: that is what a user's `pip install` does).
Pythons that are not on the machine are skipped (pyenv's are looked up; CI's machine has all).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import httpx
import pytest

from tests.bnlab.sdk.servers import make_server

REPO = Path(__file__).resolve().parents[1]
PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
# What a client install must never bring: the server's libraries, and torch (the user's).
SERVER_ONLY = (
    "sqlalchemy",
    "alembic",
    "celery",
    "fastapi",
    "uvicorn",
    "psycopg",
    "boto3",
    "pydantic-settings",
    "torch",
    "pandas",
)
pytestmark = pytest.mark.slow


def python(minor: str) -> Path | None:
    """An interpreter of 3.<minor>: this one, or pyenv's newest 3.<minor>.x."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == minor:
        return Path(sys.executable)
    found = sorted(PYENV.glob(f"{minor}.*/bin/python{minor}")) if PYENV.is_dir() else []
    exe = found[-1] if found else shutil.which(f"python{minor}")
    return Path(exe) if exe else None


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BNLAB_", "PYTHON"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=600, env=env, **kw
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    res = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, REPO])
    assert res.returncode == 0, res.stderr
    (whl,) = out.glob("bnlab-*.whl")
    return whl


def make_venv(where: Path, minor: str) -> Path:
    exe = python(minor)
    if exe is None:
        pytest.skip(f"no Python {minor} on this machine")
    res = run([exe, "-m", "venv", where])
    assert res.returncode == 0, res.stderr
    return where / "bin" / "python"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = make_server(tmp_path_factory.mktemp("serve")).start()
    yield srv
    srv.stop()


SCRIPT = """
import json, sys
import bnlab

mods = set(sys.modules)
run = bnlab.init(name="client-install", config={"lr": 0.1}, url=sys.argv[1], dir=sys.argv[2])
for i in range(5):
    run.step(loss=1.0 / (i + 1))
try:
    run.watch(object(), held_out=[[0.0]])
    watch = "no error"
except ImportError as exc:
    watch = str(exc)
run.finish(test_acc=0.5)
loaded = set(sys.modules)
print(json.dumps({
    "id": run.id,
    "watch": watch,
    "heavy": sorted(m for m in ("torch", "sqlalchemy", "celery", "fastapi", "backend", "worker")
                    if m in loaded),
}))
"""


@pytest.mark.parametrize("minor", ["3.10", "3.11", "3.12", "3.13"])
def test_client_install_streams_a_run_on_each_python(minor, wheel, server, tmp_path):
    py = make_venv(tmp_path / "venv", minor)
    res = run([py, "-m", "pip", "install", "-q", wheel])
    assert res.returncode == 0, res.stderr
    listed = run([py, "-m", "pip", "list", "--format", "json"])
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert not names & set(SERVER_ONLY), f"the client install brought {names & set(SERVER_ONLY)}"

    res = run([py, "-c", SCRIPT, server.url, tmp_path / "spool"], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["heavy"] == [], f"import bnlab loaded {out['heavy']}"
    assert "needs torch" in out["watch"]  # a clear word, not a bare ModuleNotFoundError
    stored = httpx.get(f"{server.url}/api/runs/{out['id']}", timeout=10).json()
    assert stored["status"] == "succeeded" and stored["summary"]["test_acc"] == 0.5

    cli = run([py.parent / "bnlab", "sync", "--help"])
    assert cli.returncode == 0 and "spool" in cli.stdout.lower(), cli.stdout + cli.stderr
    serve = run([py.parent / "bnlab", "serve", "--port", "1"])  # no server here: one clear line
    assert serve.returncode == 1 and "pip install 'bnlab[server]'" in serve.stderr, serve.stderr
    assert "Traceback" not in serve.stderr


@pytest.fixture(scope="module")
def venv311(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("resolve")
    venv.create(where, with_pip=True)
    return where / "bin" / "python"


@pytest.mark.parametrize(
    ("extra", "pin"),
    [
        ("", "pydantic<2.12"),
        ("", "httpx<0.28"),
        ("", "rich<14"),
        ("", "click<8.2"),
        ("[notebook]", "numpy<2"),
        ("[notebook]", "pandas<3"),
    ],
)
def test_client_resolves_beside_older_pins(extra, pin, wheel, venv311):
    """pip finds a set of versions for the client (with pandas/NumPy: its notebook extra)
    together with each pin (a dry run: resolution only, nothing installed)."""
    res = run(
        [
            venv311,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "-q",
            f"bnlab{extra} @ {wheel.as_uri()}",
            pin,
        ]
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.skipif(not os.environ.get("CI"), reason="CI's machine must have a newer Python")
def test_ci_tests_the_client_on_a_newer_python():
    """CI runs the install test above on 3.12 or 3.13 too, not only on the machine's Python:
    a machine without either fails here instead of skipping silently."""
    assert python("3.12") or python("3.13")
