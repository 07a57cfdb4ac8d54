"""A user's own model streamed by the SDK to a real `bnlab serve` (SQLite, subprocess): read back
through the API and bnlab.Api; the server killed mid-run and restarted; offline then `bnlab sync`
twice; a client killed mid-run ends crashed, its spool is synced, and the run is resumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
import torch.nn.functional as F

import bnlab
from bnlab.core.registry import LAYER_KEYS
from tests.bnlab.sdk.models import TinyResNet, cifar_like
from tests.bnlab.sdk.servers import REPO, make_server

pytestmark = pytest.mark.slow
torch.set_num_threads(1)


@pytest.fixture
def server(tmp_path):
    s = make_server(tmp_path / "server", script_timeout_s="3", reconcile_s="0.5").start()
    yield s
    s.stop()


def train(run: bnlab.Run, model, steps: int, seed: int = 0, between=None) -> None:
    x, y = cifar_like(16 * steps, seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for k in range(steps):
        xb, yb = x[16 * k : 16 * k + 16], y[16 * k : 16 * k + 16]
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.step(loss=loss.detach(), lr=0.05, my_metric=float(k))
        if between is not None:
            between(k + 1)


def spooled(path: Path) -> dict[int, dict]:
    lines = [json.loads(s) for s in path.read_text().splitlines()]
    return {r["step"]: r for r in lines if "step" in r}


def stored(url: str, run_id: int) -> tuple[dict, list[dict], dict]:
    with httpx.Client(base_url=url, timeout=30) as c:
        return (
            c.get(f"/api/runs/{run_id}").json(),
            c.get(f"/api/runs/{run_id}/layers").json()["layers"],
            c.get(f"/api/runs/{run_id}/metrics").json(),
        )


def assert_stored_once(url: str, run_id: int, spool: Path, steps: list[int]) -> dict:
    """Every probe in the spool is stored exactly once, with the values the client measured."""
    run, layers, metrics = stored(url, run_id)
    records = spooled(spool)
    assert sorted(records) == steps
    assert metrics["step"] == steps
    assert [r["metrics"]["train_loss"] for _, r in sorted(records.items())] == metrics["train_loss"]
    keys = json.loads(spool.read_text().splitlines()[1])["layer_keys"]
    for i, layer in enumerate(layers):
        assert layer["step"] == steps and layer["raw_points"] == len(steps)
        for k in ("train_var", "eval_var", "shift", "grad_norm"):
            assert layer[k] == [records[s]["layers"][i][keys.index(k)] for s in steps]
    return run


def test_stream_a_user_model_and_read_it_back(server, tmp_path):
    torch.manual_seed(0)
    model = TinyResNet(p=0.3)
    x_val, y_val = cifar_like(64, seed=7)
    with bnlab.init(
        name="resnet p=0.3",
        config={"lr": 0.05, "dropout": 0.3},
        tags=["mine"],
        url=server.url,
        dir=tmp_path,
    ) as run:
        run.watch(model, held_out=(x_val, y_val), every=4)
        train(run, model, 12)
        acc = run.evaluate(model, (x_val, y_val), train_data=cifar_like(64, seed=3))
        run.finish(test_acc=acc["test_acc_eval"])
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    got = assert_stored_once(server.url, run.id, run.spool_path, [4, 8, 12])
    assert got["kind"] == "script" and got["status"] == "succeeded" and got["tags"] == ["mine"]
    assert got["layer_names"] == names and got["config"] == {"lr": 0.05, "dropout": 0.3}
    summary = got["summary"]
    assert summary["test_acc"] == acc["test_acc_eval"] and summary["steps"] == 12
    assert set(summary["shift_predicted_by_layer"]) == {"stage1.0.bn2", "stage2.0.bn2"}
    with bnlab.Api(server.url) as api:
        runs = api.runs(tag="mine", kind="script", status="succeeded")
        assert list(runs.id) == [run.id] and runs["config.dropout"][0] == 0.3
        layers = api.layers(run.id)
        assert len(layers) == 3 * len(names) and set(LAYER_KEYS) <= set(layers.columns)
        assert list(layers[layers.layer == 0].name.unique()) == [names[0]]
        metrics = api.metrics(run.id)
        assert list(metrics.step) == [4, 8, 12] and list(metrics.my_metric) == [1.5, 5.5, 9.5]
        assert {"val_loss", "val_acc", "val_acc_train_mode", "lr"} <= set(metrics.columns)
    page = httpx.get(f"{server.url}/runs/{run.id}")
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_store_every_point_once_across_a_server_crash(server, tmp_path):
    torch.manual_seed(1)
    model = TinyResNet()
    run = bnlab.init(name="crash", url=server.url, dir=tmp_path, heartbeat_s=0.5)
    run.watch(model, held_out=cifar_like(32, seed=5)[0], every=2)

    def chaos(step: int) -> None:
        if step == 5:
            server.kill()  # SIGKILL: no shutdown, in-flight requests lost
        if step == 11:
            server.start()

    train(run, model, 16, between=chaos)
    run.finish(timeout_s=90)
    assert run.sender.state.skipped == []
    got = assert_stored_once(server.url, run.id, run.spool_path, list(range(2, 17, 2)))
    assert got["status"] == "succeeded"


def test_send_an_offline_spool_twice_and_store_it_once(server, tmp_path):
    torch.manual_seed(2)
    model = TinyResNet()
    run = bnlab.init(name="offline", mode="offline", dir=tmp_path)
    run.watch(model, held_out=cifar_like(32, seed=5)[0], every=3)
    train(run, model, 9)
    run.finish(note="from a plane")
    cli = [
        sys.executable,
        "-c",
        "from bnlab.cli import app; app()",
        "sync",
        str(run.spool_path),
        "--url",
        server.url,
    ]
    outs = [
        subprocess.run(cli, capture_output=True, text=True, cwd=REPO, timeout=120) for _ in range(2)
    ]
    for out in outs:
        assert out.returncode == 0, out.stderr
    assert "3 records" in outs[0].stdout and "succeeded" in outs[1].stdout
    with httpx.Client(base_url=server.url) as c:
        mine = [r for r in c.get("/api/runs").json()["data"] if r["name"] == "offline"]
    assert len(mine) == 1
    got = assert_stored_once(server.url, mine[0]["id"], run.spool_path, [3, 6, 9])
    assert got["status"] == "succeeded" and got["summary"]["note"] == "from a plane"


SCRIPT = """
import os, sys, torch, torch.nn.functional as F
sys.path.insert(0, {repo!r})
import bnlab
from tests.bnlab.sdk.models import TinyResNet, cifar_like
torch.manual_seed(0)
torch.set_num_threads(1)
model = TinyResNet()
opt = torch.optim.SGD(model.parameters(), lr=0.05)
run = bnlab.init(name="killed", url={url!r}, dir={dir!r}, heartbeat_s=0.5)
run.watch(model, held_out=cifar_like(32, seed=5)[0], every=4)
x, y = cifar_like(16 * 12)
for k in range(12):
    loss = F.cross_entropy(model(x[16 * k:16 * k + 16]), y[16 * k:16 * k + 16])
    opt.zero_grad(); loss.backward(); opt.step()
    run.step(loss=loss.detach())
print(run.id, run.spool_path, flush=True)
os.kill(os.getpid(), 9)  # dies before the sender delivers the last probes
"""


def test_end_a_silent_client_crashed_then_sync_and_resume_it(server, tmp_path):
    code = SCRIPT.format(repo=str(REPO), url=server.url, dir=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == -9, out.stderr
    run_id, spool = out.stdout.split()
    run_id, spool = int(run_id), Path(spool)
    deadline = time.monotonic() + 30
    while stored(server.url, run_id)[0]["status"] != "crashed":
        assert time.monotonic() < deadline, "the silent run was not marked crashed"
        time.sleep(0.5)
    state = bnlab.sync(spool, server.url)
    assert state.skipped == [] and state.finished is None
    run = assert_stored_once(server.url, run_id, spool, [4, 8, 12])
    assert run["status"] == "crashed" and "sent nothing" in run["error"]
    # the script restarts and continues the same run
    torch.manual_seed(0)
    model = TinyResNet()
    resumed = bnlab.init(resume=run_id, url=server.url, dir=tmp_path, heartbeat_s=0.5)
    assert resumed.step_count == 12 and resumed.name == "killed"
    resumed.watch(model, held_out=cifar_like(32, seed=5)[0], every=4)
    train(resumed, model, 8, seed=9)
    resumed.finish()
    got, layers, metrics = stored(server.url, run_id)
    assert got["status"] == "succeeded" and got["attempt"] == 2 and got["step"] == 20
    assert metrics["step"] == [4, 8, 12, 16, 20] and layers[0]["step"] == [4, 8, 12, 16, 20]


def test_run_the_example_against_a_server(server, tmp_path):
    """examples/own_loop.py, as the README runs it: its run is on the server, kind script."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "BNLAB_URL": server.url,
        "BNLAB_SPOOL_DIR": str(tmp_path),
    }
    cmd = [
        sys.executable,
        str(REPO / "examples" / "own_loop.py"),
        "--epochs",
        "1",
        "--train-size",
        "640",
        "--batch-size",
        "32",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run_id = int(out.stdout.split()[1].rstrip(":"))
    run, layers, metrics = stored(server.url, run_id)
    assert run["kind"] == "script" and run["status"] == "succeeded"
    assert "layer1.0.bn2" in run["layer_names"] and len(layers) == len(run["layer_names"])
    assert metrics["step"] == [20] and run["summary"]["shift_predicted_by_layer"]
    assert 0.0 <= run["summary"]["test_acc_eval"] <= 1.0
