"""The real local stack for the browser tests and the dashboard benchmark.

`start_stack` runs `bnlab serve` (uvicorn + one supervised Celery worker, SQLite + the embedded
broker) as a subprocess on a free port with a private data directory, and waits for
/api/health. `seed_runs` writes synthetic finished runs straight into that database through
the SQLAlchemy models, so the compare view can be measured on 20 runs without training them.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.utils.net import free_port

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@dataclass
class Stack:
    url: str
    data_dir: Path
    proc: subprocess.Popen
    log_path: Path
    token: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.data_dir / 'bnlab.db'}"

    def client(self, token: str | None = None) -> httpx.Client:
        token = token or self.token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the stack's own process group (serve + its Celery worker), then SIGKILL
        whatever of that group is left after `timeout_s` (a worker's warm shutdown waits
        for its task)."""
        group = self.proc.pid  # start_new_session: the group id is serve's pid
        try:
            os.killpg(group, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.proc.poll()
            try:
                os.killpg(group, 0)  # raises once no process of the group is left
            except ProcessLookupError:
                return
            time.sleep(0.2)
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


def start_stack(
    data_dir: Path,
    *,
    token: str | None = None,
    workers: int = 1,
    timeout_s: float = 90.0,
    extra_env: dict[str, str] | None = None,
) -> Stack:
    """`bnlab serve` on a free port with `data_dir`; returns once /api/health answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BNLAB_")}
    env.update(
        BNLAB_DATA_DIR=str(data_dir),
        PYTHONUNBUFFERED="1",
        # keep the shared 2 cores for the other suites: torch in the worker uses one thread
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    if token:
        env["BNLAB_API_TOKEN"] = token
    env.update(extra_env or {})
    log_path = data_dir / "stack.log"
    cmd = [
        sys.executable,
        "-c",
        "from bnlab.cli import app; app()",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--workers",
        str(workers),
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    stack = Stack(
        url=f"http://127.0.0.1:{port}",
        data_dir=data_dir,
        proc=proc,
        log_path=log_path,
        token=token,
        env=env,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bnlab serve exited with {proc.returncode}:\n{stack.log_tail()}")
        try:
            if httpx.get(f"{stack.url}/api/health", timeout=2.0).status_code == 200:
                return stack
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stack.stop()
    raise RuntimeError(
        f"bnlab serve did not answer /api/health in {timeout_s}s:\n{stack.log_tail()}"
    )


def wait_for_workers(stack: Stack, timeout_s: float = 60.0) -> None:
    """Block until /api/health lists a live worker (the first one takes a while to import torch)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if httpx.get(f"{stack.url}/api/health", timeout=5.0).json().get("workers"):
            return
        time.sleep(1.0)
    raise RuntimeError(f"no live worker after {timeout_s}s:\n{stack.log_tail()}")


# ---- helpers for the browser tests ------------------------------------------------------

SCREENSHOTS = REPO / "artifacts" / "screenshots"
TINY = {  # a run that trains in seconds on one CPU thread
    "dataset": {"name": "digits", "limit": 256},
    "model": {"widths": [32]},
    "train": {"epochs": 2, "batch_size": 32},
    "probe": {
        "every_steps": 4,
        "eval_batches": 1,
        "train_mode_test_batch_sizes": [1, 8],
        "recalibrate_samples": 128,
    },
}


def screenshot(pg, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    return path


def tiny_config(name: str, **overrides) -> dict:
    import copy

    from bnlab.core.schema.experiment import set_dotted

    cfg = copy.deepcopy(TINY) | {"name": name}
    for path, value in overrides.items():
        cfg = set_dotted(cfg, path.replace("__", "."), value)
    return cfg


def submit(stack: Stack, config: dict) -> int:
    with stack.client() as c:
        r = c.post("/api/runs", json=config)
        assert r.status_code == 201, r.text
        return r.json()["id"]


def wait_finished(stack: Stack, run_id: int, timeout_s: float = 240.0) -> dict:
    import time

    deadline = time.monotonic() + timeout_s
    with stack.client() as c:
        while time.monotonic() < deadline:
            run = c.get(f"/api/runs/{run_id}").json()
            if run["status"] in ("succeeded", "failed", "cancelled", "diverged"):
                return run
            time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish in {timeout_s}s:\n{stack.log_tail()}")


# ---- synthetic runs ------------------------------------------------------------------------

RATES = (0.1, 0.2, 0.3, 0.4, 0.5)
PLACEMENTS = {
    "before_bn": ["linear", "dropout", "batchnorm", "activation"],
    "after_bn": ["linear", "batchnorm", "activation", "dropout"],
}


def synthetic_config(rate: float, placement: str, seed: int, n_layers: int) -> dict:
    from bnlab.core.schema.experiment import ExperimentConfig

    cfg = ExperimentConfig.model_validate(
        {
            "name": f"synthetic {placement} p={rate} seed={seed}",
            "tags": ["synthetic"],
            "model": {
                "widths": [64] * min(n_layers, 64),  # the schema's cap; deeper: names only
                "block": PLACEMENTS[placement],
                "dropout": {"rate": rate},
            },
            "train": {"seed": seed},
        }
    )
    return cfg.model_dump(mode="json")


def seed_runs(
    database_url: str,
    *,
    n_runs: int = 20,
    n_layers: int = 8,
    n_steps: int = 1000,
    every: int = 20,
    name_prefix: str = "",
) -> list[int]:
    """Insert `n_runs` finished runs with `n_layers` x `n_steps` layer stats; returns their ids.

    Values follow the variance-shift picture (eval variance above train variance by a factor
    that grows with the dropout rate when dropout sits before BN), so the charts look real.
    """
    import numpy as np
    from sqlalchemy import insert
    from sqlalchemy.orm import Session

    from backend.db.models import LayerStat, Run, RunMetric
    from backend.db.session import make_engine

    engine = make_engine(database_url)
    combos = [
        (r, p, s) for s in range(max(1, math.ceil(n_runs / 10))) for p in PLACEMENTS for r in RATES
    ]
    ids: list[int] = []
    with Session(engine) as session:
        for k, (rate, placement, seed) in enumerate(combos[:n_runs]):
            rng = np.random.default_rng(1000 + k)
            steps = np.arange(n_steps) * every
            shift_target = 1.0 / (1.0 - rate) if placement == "before_bn" else 1.0 + 0.02 * rate
            layer_names = [f"blocks.{i}.norm" for i in range(n_layers)]
            shifts = {
                name: float(shift_target * (1 - 0.04 * i)) for i, name in enumerate(layer_names)
            }
            run = Run(
                name=f"{name_prefix}synthetic {placement} p={rate} seed={seed}",
                status="succeeded",
                config=synthetic_config(rate, placement, seed, n_layers),
                tags=["synthetic"],
                progress=1.0,
                step=int(steps[-1]),
                attempt=1,
                device="cpu",
                host="synthetic",
                layer_names=layer_names,
                summary={
                    "test_acc_eval": 0.9 - 0.2 * rate * (placement == "before_bn"),
                    "test_acc_train_mode": {"1": 0.1, "8": 0.7, "64": 0.88},
                    "test_acc_recalibrated": 0.93,
                    "shift_by_layer": shifts,
                    # what the engine records beside it: the reading with no shift (n = 1024
                    # held-out samples: 1 + 0.8 sqrt(2/n)), and the prediction for the BN that
                    # a dropout feeds directly (the first, with dropout before BN)
                    "shift_floor_by_layer": {n: 1.0 + 0.8 * math.sqrt(2 / 1024) for n in shifts},
                    "shift_predicted_by_layer": (
                        {layer_names[0]: 1.0 / (1.0 - rate)} if placement == "before_bn" else {}
                    ),
                    "shift_per_channel": {
                        n: list(rng.normal(v, 0.05, 64)) for n, v in shifts.items()
                    },
                    "steps_per_s": 500.0,
                    "wall_s": 40.0,
                    "device": "cpu",
                },
            )
            session.add(run)
            session.flush()
            decay = np.exp(-steps / (steps[-1] / 4 + 1))
            acc = 0.95 - 0.85 * decay + rng.normal(0, 0.01, n_steps)
            session.execute(
                insert(RunMetric),
                [
                    {
                        "run_id": run.id,
                        "step": int(s),
                        "epoch": float(s) / (every * 50),
                        "train_loss": float(2.3 * decay[i] + 0.05),
                        "train_acc": float(acc[i]),
                        "val_loss": float(2.3 * decay[i] + 0.1),
                        "val_acc": float(acc[i] - 0.02),
                        "val_acc_train_mode": float(acc[i] - 0.1),
                        "lr": 0.05,
                    }
                    for i, s in enumerate(steps)
                ],
            )
            rows = []
            for layer, name in enumerate(layer_names):
                train_var = 1.0 + 0.5 * decay + rng.normal(0, 0.03, n_steps)
                eval_var = train_var * shifts[name] + rng.normal(0, 0.03, n_steps)
                running_var = np.convolve(train_var, np.ones(10) / 10, mode="same")
                rows += [
                    {
                        "run_id": run.id,
                        "layer": layer,
                        "step": int(s),
                        "train_mean": 0.0,
                        "train_var": float(train_var[i]),
                        "running_mean": 0.0,
                        "running_var": float(running_var[i]),
                        "eval_mean": 0.01,
                        "eval_var": float(eval_var[i]),
                        "shift": float(eval_var[i] / running_var[i]),
                        "grad_norm": float(decay[i] + 0.1),
                    }
                    for i, s in enumerate(steps)
                ]
            session.execute(insert(LayerStat), rows)
            session.commit()
            ids.append(run.id)
    engine.dispose()
    return ids
