"""`bnlab sync` of a damaged spool, and resuming a run through the SDK, against a real
`bnlab serve` on SQLite and on PostgreSQL (issue 21, items 1 and 2).

Each fails on the code before the fix: one bad line made the server refuse the whole batch (0
of 20 records stored) while the finish line still ended the run `succeeded`, the client exited
0, and the repaired spool was then refused (409); and a resume needed no key of the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
import torch.nn.functional as F

import bnlab
from bnlab.sdk.transport import KEYS_FILE, Client, Rejected, held_key, resume_run
from tests.bnlab.sdk.models import TinyResNet, cifar_like
from tests.bnlab.sdk.servers import REPO, Server, make_server
from tests.utils.services import flush_redis, worker_redis

pytestmark = pytest.mark.slow
torch.set_num_threads(1)
TIMEOUT = {"script_timeout_s": "3", "reconcile_s": "0.5"}  # a silent client is dead after 3 s


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp(f"repair-{request.param}")
    if request.param == "sqlite":
        s = make_server(data, **TIMEOUT).start()
        yield s
        s.stop()
        return
    from tests.conftest import _create_database, _drop_database

    name = f"bnlab_sdk_repair_{os.getpid()}"
    broker = worker_redis(11)
    flush_redis(broker)
    s = make_server(data, database_url=_create_database(name), broker_url=broker, **TIMEOUT).start()
    try:
        yield s
    finally:
        s.stop()
        flush_redis(broker)
        _drop_database(name)


def api(server: Server, path: str) -> dict:
    return httpx.get(f"{server.url}{path}", timeout=30).json()


def bnlab_sync(server: Server, spool: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from bnlab.cli import app; app()", "sync", str(spool)]
    return subprocess.run(
        [*cmd, "--url", server.url], capture_output=True, text=True, cwd=REPO, timeout=180
    )


def train(run: bnlab.Run, steps: int, seed: int = 0) -> None:
    torch.manual_seed(seed)
    model = TinyResNet()
    run.watch(model, held_out=cifar_like(16, seed=5)[0], every=1)
    x, y = cifar_like(8 * steps, seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for k in range(steps):
        loss = F.cross_entropy(model(x[8 * k : 8 * k + 8]), y[8 * k : 8 * k + 8])
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.step(loss=loss.detach())


# ----------------------------------------------------------------------------- 2. sync


def test_a_damaged_spool_stores_the_rest_stays_open_and_completes_once_repaired(server, tmp_path):
    run = bnlab.init(name="damaged", mode="offline", dir=tmp_path / "made")
    train(run, 20)
    run.finish(note="from a plane")
    lines = run.spool_path.read_text().splitlines()
    steps = [json.loads(ln)["step"] for ln in lines if ln.startswith('{"step"')]
    assert steps == list(range(1, 21)) and json.loads(lines[-1])["type"] == "finish"
    torn = next(i for i, ln in enumerate(lines) if ln.startswith('{"step":7,'))
    wrong = next(i for i, ln in enumerate(lines) if ln.startswith('{"step":12,'))
    damaged = list(lines)
    damaged[torn] = lines[torn][: len(lines[torn]) // 2]  # a torn write: not JSON
    bad = json.loads(lines[wrong])
    bad["metrics"] = {"not a metric name!": 1.0}  # JSON, but the server refuses it
    damaged[wrong] = json.dumps(bad)
    spool = tmp_path / "synced" / run.spool_path.name
    spool.parent.mkdir()
    spool.write_text("\n".join(damaged) + "\n")

    out = bnlab_sync(server, spool)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"line {torn + 1}: not JSON" in out.stderr, out.stderr
    assert f"line {wrong + 1}: refused: 422" in out.stderr and "not a metric name!" in out.stderr
    assert "finish (succeeded) not sent" in out.stderr and "18 records" in out.stdout
    run_id = int(out.stdout.split("run ")[1].split(":")[0])
    got = api(server, f"/api/runs/{run_id}")
    assert got["status"] in ("running", "crashed") and got["summary"] is None
    kept = [s for s in range(1, 21) if s not in (7, 12)]
    assert api(server, f"/api/runs/{run_id}/metrics")["step"] == kept

    again = bnlab_sync(server, spool)  # the same damaged spool: the same answer, no 409
    assert again.returncode == 1 and "409" not in again.stderr, again.stderr
    assert api(server, f"/api/runs/{run_id}/metrics")["step"] == kept

    spool.write_text("\n".join(lines) + "\n")  # repaired
    fixed = bnlab_sync(server, spool)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert fixed.stderr == "" and "succeeded" in fixed.stdout
    got = api(server, f"/api/runs/{run_id}")
    assert got["status"] == "succeeded" and got["summary"]["note"] == "from a plane"
    metrics = api(server, f"/api/runs/{run_id}/metrics")
    assert metrics["step"] == list(range(1, 21))  # every point once
    spooled = {json.loads(ln)["step"]: json.loads(ln) for ln in lines if ln.startswith('{"step"')}
    assert metrics["train_loss"] == [spooled[s]["metrics"]["train_loss"] for s in range(1, 21)]
    layers = api(server, f"/api/runs/{run_id}/layers")["layers"]
    assert layers and all(layer["step"] == list(range(1, 21)) for layer in layers)

    done = bnlab_sync(server, spool)  # a finished run synced again: idempotent
    assert done.returncode == 0 and "nothing to send" in done.stdout, done.stdout + done.stderr


def test_a_spool_that_is_not_a_spool_is_reported_by_line(server, tmp_path):
    junk = tmp_path / "junk.jsonl"
    junk.write_text('hello\n{"step": 3, "metrics": {}}\n[1, 2]\n')
    out = bnlab_sync(server, junk)
    assert out.returncode == 1
    for reason in ("line 1: not JSON", "line 2: records before any run line", "line 3: not a"):
        assert reason in out.stderr, out.stderr


# ----------------------------------------------------------------------------- 1. resume

SCRIPT = """
import sys, time, torch, torch.nn.functional as F
sys.path.insert(0, {repo!r})
import bnlab
from tests.bnlab.sdk.models import TinyResNet, cifar_like
torch.manual_seed(0)
torch.set_num_threads(1)
model = TinyResNet()
opt = torch.optim.SGD(model.parameters(), lr=0.05)
run = bnlab.init(name="restarted", url={url!r}, dir={dir!r}, heartbeat_s=0.3)
run.watch(model, held_out=cifar_like(16, seed=5)[0], every=4)
x, y = cifar_like(8 * 8)
for k in range(8):
    loss = F.cross_entropy(model(x[8 * k:8 * k + 8]), y[8 * k:8 * k + 8])
    opt.zero_grad(); loss.backward(); opt.step()
    run.step(loss=loss.detach())
assert run.sender.flush(60)
print(run.id, flush=True)
time.sleep(600)  # alive, heartbeating, until killed
"""


def test_resume_proves_a_key_waits_out_a_live_client_and_continues(server, tmp_path, monkeypatch):
    monkeypatch.delenv("BNLAB_RUN_KEY", raising=False)
    spools = tmp_path / "spools"
    code = SCRIPT.format(repo=str(REPO), url=server.url, dir=str(spools))
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,
    )
    try:
        run_id = int(proc.stdout.readline())
        held = held_key(spools, server.url, run_id)
        assert held is not None and (spools / KEYS_FILE).stat().st_mode & 0o077 == 0
        # Another process holding the key, while the first one still heartbeats: refused.
        client = Client(server.url)
        try:
            with pytest.raises(Rejected) as alive:
                resume_run(client, run_id, "n" * 43, {}, held, wait_s=0)
        finally:
            client.close()
        assert alive.value.status == 409 and "alive" in alive.value.detail
        assert alive.value.retry_after >= 1
        # A stranger: the API is open (no token here), but no key of the run.
        with pytest.raises(RuntimeError, match="BNLAB_RUN_KEY"):
            bnlab.init(resume=run_id, url=server.url, dir=tmp_path / "elsewhere")
        assert api(server, f"/api/runs/{run_id}")["attempt"] == 1
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the script crashes
        proc.wait(30)
    # Restarted at once: the server still counts it alive for up to 3 s; init waits that out.
    resumed = bnlab.init(resume=run_id, url=server.url, dir=spools, heartbeat_s=0.3)
    assert resumed.step_count == 8 and resumed.name == "restarted"
    train(resumed, 4, seed=3)
    resumed.finish()
    got = api(server, f"/api/runs/{run_id}")
    assert (got["status"], got["attempt"], got["step"]) == ("succeeded", 2, 12)
    assert api(server, f"/api/runs/{run_id}/metrics")["step"] == [4, 8, 9, 10, 11, 12]


def test_an_offline_resume_spool_syncs_with_the_key_it_holds(server, tmp_path, monkeypatch):
    monkeypatch.delenv("BNLAB_RUN_KEY", raising=False)
    spools = tmp_path / "spools"
    first = bnlab.init(name="offline twice", mode="offline", dir=spools)
    first.sender.stop()  # the process died: no finish line
    first.spool.close()
    bnlab.sdk.run._live.discard(first)
    assert bnlab_sync(server, first.spool_path).returncode == 0  # creates it, keeps its key
    run_id = json.loads((spools / KEYS_FILE).read_text().splitlines()[0])["run_id"]
    deadline = time.monotonic() + 30
    while api(server, f"/api/runs/{run_id}")["status"] != "crashed":
        assert time.monotonic() < deadline, "the silent run was not marked crashed"
        time.sleep(0.3)
    later = bnlab.init(resume=run_id, mode="offline", start_step=1, dir=spools)
    head = json.loads(later.spool_path.read_text().splitlines()[0])
    assert head["type"] == "resume" and head["held_key"] == held_key(spools, None, run_id)
    train(later, 3, seed=4)
    later.finish()
    out = bnlab_sync(server, later.spool_path)
    assert out.returncode == 0, out.stdout + out.stderr
    got = api(server, f"/api/runs/{run_id}")
    assert (got["status"], got["attempt"]) == ("succeeded", 2)
    assert api(server, f"/api/runs/{run_id}/metrics")["step"] == [2, 3, 4]
    # the same spool without the key it held, from a machine that has none: refused, open
    stripped = tmp_path / "stranger" / later.spool_path.name
    stripped.parent.mkdir()
    lines = later.spool_path.read_text().splitlines()
    del head["held_key"]
    head["key"] = "x" + head["key"]  # a resume not made yet (else it would be a no-op)
    stripped.write_text("\n".join([json.dumps(head), *lines[1:]]) + "\n")
    out = bnlab_sync(server, stripped)
    assert out.returncode == 1 and "line 1: resume refused: 401" in out.stderr, out.stderr
