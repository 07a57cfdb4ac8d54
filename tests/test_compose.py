"""The compose deployment, checked without a Docker engine (none runs on this machine): the file
parses, every command and Dockerfile points at code that exists, secrets come from the env."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from backend.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]


def command_words(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    words = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    return [w for part in words for w in shlex.split(part)] if words[:2] == ["sh", "-c"] else words


def module_targets(words: list[str]) -> list[str]:
    """Every `python -m MOD`, `uvicorn MOD:ATTR` and `celery -A MOD:ATTR` in a command."""
    out = []
    for i, w in enumerate(words[:-1]):
        nxt = words[i + 1]
        if w == "-m" and words[i - 1].startswith("python"):
            out.append(nxt)
        if w in ("-A", "--app"):
            out.append(nxt)
    out += [w for w in words if re.fullmatch(r"[a-z_.]+:[a-z_]+", w)]
    return out


def resolve(target: str) -> object:
    module, _, attr = target.partition(":")
    assert importlib.util.find_spec(module) is not None, f"module {module} does not exist"
    if not attr:
        return module
    mod = importlib.import_module(module)
    assert hasattr(mod, attr), f"{module} has no attribute {attr}"
    return getattr(mod, attr)


def test_parse_compose_with_the_four_services() -> None:
    """postgres, redis, api and worker are all declared."""
    assert {"postgres", "redis", "api", "worker"} <= set(SERVICES)


@pytest.mark.parametrize("name", ["api", "worker"])
def test_point_service_command_at_existing_modules(name: str) -> None:
    """Every module (and module:attribute) a service command runs exists in the repo."""
    targets = module_targets(command_words(SERVICES[name]))
    assert targets, f"{name}: no python module found in its command"
    for target in targets:
        resolve(target)


@pytest.mark.parametrize("name", ["api", "worker"])
def test_build_service_from_existing_dockerfile(name: str) -> None:
    """Images build from the repo root with a Dockerfile that exists and copies what it runs."""
    build = SERVICES[name]["build"]
    dockerfile = ROOT / build["context"] / build["dockerfile"]
    text = dockerfile.read_text()
    assert build["context"] == "." and "COPY backend/ backend/" in text


def test_keep_torch_out_of_api_image() -> None:
    """The API image installs only the api extra: no torch (docs/design.md)."""
    lines = (ROOT / "backend" / "Dockerfile").read_text().splitlines()
    code = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    assert "'.[api]'" in code and "worker]" not in code and "torch" not in code


def test_reserve_gpu_for_worker() -> None:
    """The worker reserves an NVIDIA GPU through deploy.resources.reservations.devices."""
    devices = SERVICES["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


@pytest.mark.parametrize("name", ["api", "worker"])
def test_wait_for_healthy_dependencies(name: str) -> None:
    """api and worker start only once what they depend on reports healthy."""
    deps = SERVICES[name]["depends_on"]
    assert deps and all(d["condition"] == "service_healthy" for d in deps.values())
    assert all("healthcheck" in SERVICES[d] for d in deps)


def test_take_secrets_from_env_with_guards() -> None:
    """Passwords and the API token come from the env file with ${VAR:?...} guards, none inline."""
    raw = (ROOT / "docker-compose.yml").read_text()
    for var in ("POSTGRES_PASSWORD", "BNLAB_API_TOKEN"):
        assert re.search(r"\$\{" + var + r":\?", raw), f"{var} has no :? guard"
    assert not re.search(r"(PASSWORD|TOKEN):\s*['\"]?[A-Za-z0-9]", raw), "an inline secret"


def test_list_every_setting_in_env_example() -> None:
    """.env.example mentions every Settings field (BNLAB_<NAME>)."""
    text = (ROOT / ".env.example").read_text()
    names = {(f.alias or f"BNLAB_{n}").upper() for n, f in Settings.model_fields.items()}
    missing = sorted(n for n in names if n not in text)
    assert not missing, missing
