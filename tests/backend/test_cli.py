"""The `bnlab` CLI: `run` in-process, and `serve` as a real process (uvicorn + a supervised
Celery worker) driven over HTTP by `submit --watch`, `runs` and `export`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from bnlab.cli import app
from tests.worker.procs import (
    ROOT,
    PrivateRedis,
    free_port,
    scratch_pg_database,
    slow_config,
    tiny_config,
    wait_for,
)

runner = CliRunner()


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


def test_refuse_invalid_config_naming_the_field(tmp_path) -> None:
    """`bnlab run` with an invalid value exits 2 with a message naming the field path."""
    result = runner.invoke(app, ["run", str(write(tmp_path, tiny_config(train__epochs=0)))])
    assert result.exit_code == 2 and "train.epochs" in result.output, result.output


@pytest.mark.slow
def test_run_config_in_process_and_write_results(tmp_path) -> None:
    """`bnlab run CONFIG --out FILE` trains and writes config, metrics, layers and summary."""
    out = tmp_path / "results.json"
    result = runner.invoke(app, ["run", str(write(tmp_path, tiny_config())), "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert {"config", "metrics", "layers", "summary"} <= set(data)
    assert len(data["metrics"]["step"]) > 0 and data["summary"]["test_acc_eval"] > 0.5


class Served:
    """`python -m bnlab.cli serve` on a free port with its own data directory."""

    def __init__(self, tmp: Path, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "serve.log"
        env = {
            **os.environ,
            "BNLAB_HEARTBEAT_S": "0.5",
            "BNLAB_HEARTBEAT_TIMEOUT_S": "6",
            "BNLAB_RECONCILE_S": "1",
            "OMP_NUM_THREADS": "1",
            **(extra_env or {}),
        }
        for key in ("BNLAB_DATABASE_URL", "BNLAB_BROKER_URL", "BNLAB_API_TOKEN"):
            if extra_env is None or key not in extra_env:
                env.pop(key, None)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bnlab.cli",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(tmp / "data"),
            ],
            env=env,
            cwd=str(ROOT),
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(self.worker_pids, 90, f"serve with a live worker\n{self.tail()}", every=0.5)
        except AssertionError:
            self.stop()  # never leave an orphan serve (and its reconciler) behind
            raise

    def health(self) -> dict:
        try:
            return httpx.get(f"{self.url}/api/health", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return {}

    def worker_pids(self) -> list[int]:
        """Pids of live workers (a SIGKILLed one keeps its row until the heartbeat timeout)."""
        return [
            w["pid"] for w in self.health().get("workers", []) if Path(f"/proc/{w['pid']}").exists()
        ]

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "bnlab.cli", *args, "--url", self.url],
            capture_output=True,
            text=True,
            cwd=str(ROOT),
            timeout=300,
            env={**os.environ, "COLUMNS": "200"},
        )

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # its worker gets SIGTERM through PR_SET_PDEATHSIG
            self.proc.wait()


@pytest.fixture(scope="module", params=["sqlite_fs", "pg_redis"])
def served(request, tmp_path_factory) -> Iterator[Served]:
    """`bnlab serve` on the embedded default, and on PostgreSQL (scratch db) + Redis."""
    tmp = tmp_path_factory.mktemp("serve")
    if request.param == "sqlite_fs":
        server = Served(tmp)
        yield server
        server.stop()
        return
    redis = PrivateRedis()  # its own server: other stacks on the shared db 2 cannot interfere
    redis.start()
    try:
        with scratch_pg_database() as url:
            server = Served(tmp, {"BNLAB_DATABASE_URL": url, "BNLAB_BROKER_URL": redis.url})
            yield server
            server.stop()
    finally:
        redis.stop()


@pytest.mark.slow
def test_submit_and_watch_run_to_success(served: Served, tmp_path) -> None:
    """`bnlab submit CONFIG --watch` sends the run over REST and follows it to `succeeded`."""
    result = served.cli("submit", str(write(tmp_path, tiny_config(name="cli-watch"))), "--watch")
    assert result.returncode == 0 and "succeeded" in result.stdout, result.stdout + result.stderr


@pytest.mark.slow
def test_submit_sweep_preset_as_its_runs(served: Served) -> None:
    """`bnlab submit --preset ID` posts a sweep preset to /api/sweeps: one run per cell."""
    import json as _json
    import re

    preset = _json.loads((ROOT / "backend/presets/variance_shift.json").read_text())
    result = served.cli("submit", "--preset", "variance_shift")
    ids = [int(i) for i in re.findall(r"^run (\d+) \w+$", result.stdout, re.M)]
    for run_id in ids:  # the module's other tests need the worker free
        httpx.post(f"{served.url}/api/runs/{run_id}/cancel", timeout=10)
    cells = 1
    for values in preset["sweep"]["grid"].values():
        cells *= len(values)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(ids) == cells * len(preset["sweep"].get("seeds") or [0])


@pytest.mark.slow
def test_refuse_submit_of_unknown_preset(served: Served) -> None:
    """`bnlab submit --preset nope` exits 2 with the server's 404 message."""
    result = served.cli("submit", "--preset", "nope")
    assert result.returncode == 2 and "404" in result.stderr, result.stdout + result.stderr


@pytest.mark.slow
def test_refuse_submit_of_invalid_config_naming_the_field(served: Served, tmp_path) -> None:
    """`bnlab submit` of an invalid config exits 2 and names the field the API rejected."""
    result = served.cli("submit", str(write(tmp_path, tiny_config(train__batch_size=1))))
    assert result.returncode == 2 and "train.batch_size" in result.stderr, result.stderr


@pytest.mark.slow
def test_list_runs_in_table(served: Served, tmp_path) -> None:
    """`bnlab runs` shows the submitted run by name."""
    served.cli("submit", str(write(tmp_path, tiny_config(name="listed-run"))))
    result = served.cli("runs")
    assert result.returncode == 0 and "listed-run" in result.stdout, result.stdout


@pytest.mark.slow
def test_export_finished_run_as_npz(served: Served, tmp_path) -> None:
    """`bnlab export RUN_ID` downloads the trained weights as a loadable npz."""
    import numpy as np

    submitted = served.cli("submit", str(write(tmp_path, tiny_config(name="exported"))), "--watch")
    run_id = submitted.stdout.split()[1]
    out = tmp_path / "model.npz"
    result = served.cli("export", run_id, "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(np.load(out, allow_pickle=False).files) > 0


@pytest.mark.slow
def test_restart_worker_when_it_dies(served: Served) -> None:
    """Breaks: the worker process of `bnlab serve` is killed with SIGKILL.
    Must hold: serve's supervisor starts a new worker, which shows up live in /api/health."""
    [pid] = served.worker_pids()
    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: (pids := served.worker_pids()) and pid not in pids,
        90,
        f"a new worker\n{served.tail()}",
        every=0.5,
    )


@pytest.mark.slow
def test_resume_run_when_serve_worker_killed(served: Served, tmp_path) -> None:
    """Breaks: the worker of `bnlab serve` is SIGKILLed after the run's first epoch checkpoint.
    Must hold, with nothing but serve itself repairing it: the supervisor restarts the worker,
    the API's reconciler requeues the stale run, and it resumes and ends `succeeded` on
    attempt 2 while the API keeps answering."""
    cfg = write(tmp_path, slow_config(name="killed-in-serve", train__epochs=4))
    run_id = json.loads(served.cli("submit", str(cfg)).stdout.split()[1])

    def get() -> dict:
        return httpx.get(f"{served.url}/api/runs/{run_id}", timeout=5).json()

    wait_for(lambda: get()["progress"] > 0.3, 120, "the first epoch", every=0.2)
    [pid] = served.worker_pids()
    os.kill(pid, signal.SIGKILL)
    run = wait_for(
        lambda: (r := get())["status"] in ("succeeded", "failed") and r,
        180,
        f"the run to end\n{served.tail()}",
        every=0.5,
    )
    assert (run["status"], run["attempt"]) == ("succeeded", 2), run


def test_upgrade_database_to_head(tmp_path) -> None:
    """`bnlab db upgrade` creates every table, the workers table of migration 0002 included."""
    from sqlalchemy import create_engine, inspect

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = runner.invoke(app, ["db", "upgrade", "--database-url", url])
    assert result.exit_code == 0, result.output
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"runs", "run_metrics", "layer_stats", "workers"} <= tables


@pytest.mark.slow
def test_read_sane_series_over_http_after_training(served: Served, tmp_path) -> None:
    """A run submitted over REST trains in the real worker; its metrics and per-layer stats
    come back through the API, columnar, one value per probe step, in their ranges."""
    submitted = served.cli(
        "submit", str(write(tmp_path, tiny_config(name="http-series"))), "--watch"
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    run_id = submitted.stdout.split()[1]
    metrics = httpx.get(f"{served.url}/api/runs/{run_id}/metrics", timeout=10).json()
    layers = httpx.get(f"{served.url}/api/runs/{run_id}/layers", timeout=10).json()["layers"]
    steps = metrics["step"]
    assert len(steps) >= 5 and steps == sorted(set(steps))
    assert all(0.0 <= a <= 1.0 for a in metrics["val_acc"])
    assert layers and all(layer["step"] == steps for layer in layers)
    assert all(v > 0 for layer in layers for v in layer["train_var"] + layer["running_var"])
