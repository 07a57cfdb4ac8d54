"""SIGTERM (what systemd, docker, Slurm and Kubernetes send) ends a script's run as Ctrl-C does
(issue 21 item 9): flushed, `cancelled` "terminated by SIGTERM", not left `running` for the
reconciler to call `crashed`. A handler the user or a framework installed first is chained,
and put back when the run ends.

Real processes: a user's script (a subprocess) streaming to a real `bnlab serve` (SQLite and
the embedded broker), killed with SIGTERM mid-loop; the in-process tests send SIGTERM to the
test process itself with a handler of its own in place.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

import bnlab
from bnlab.sdk import run as run_module
from tests.bnlab.sdk.servers import REPO, make_server

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = make_server(tmp_path_factory.mktemp("sigterm-server")).start()
    try:
        yield s
    finally:
        s.stop()


def get_run(url: str, run_id: int) -> dict:
    return httpx.get(f"{url}/api/runs/{run_id}", timeout=30).json()


def wait_for(what, timeout_s: float, every_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)


def spooled_steps(path: Path) -> list[int]:
    return [json.loads(s)["step"] for s in path.read_text().splitlines() if s.startswith('{"step"')]


SCRIPT = """
import signal, sys, time, torch, torch.nn.functional as F
sys.path.insert(0, {repo!r})
import bnlab
from tests.bnlab.sdk.models import TinyResNet, cifar_like
torch.manual_seed(0)
torch.set_num_threads(1)
if {user_handler!r}:
    def mine(signum, frame):  # a user's own handler: save, say so, exit with its own status
        print("user handler ran", flush=True)
        sys.exit(7)
    signal.signal(signal.SIGTERM, mine)
model = TinyResNet()
opt = torch.optim.SGD(model.parameters(), lr=0.05)
x, y = cifar_like(16 * 8)
run = bnlab.init(name="endless", url={url!r}, dir={dir!r}, heartbeat_s=0.5)
run.watch(model, held_out=cifar_like(32, seed=5)[0], every=5)
print(run.id, run.spool_path, flush=True)
k = 0
while True:  # only a signal ends this loop; no `with run:`, the exit hook ends the run
    i = k % 8
    loss = F.cross_entropy(model(x[16 * i:16 * i + 16]), y[16 * i:16 * i + 16])
    opt.zero_grad(); loss.backward(); opt.step()
    run.step(loss=loss.detach())
    k += 1
    time.sleep(0.01)
"""


def start_script(server, tmp_path: Path, user_handler: bool) -> tuple[subprocess.Popen, int, Path]:
    code = SCRIPT.format(
        repo=str(REPO), url=server.url, dir=str(tmp_path), user_handler=user_handler
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    line = proc.stdout.readline().split()
    assert len(line) == 2, proc.stderr.read() if proc.poll() is not None else line
    return proc, int(line[0]), Path(line[1])


@pytest.mark.slow
@pytest.mark.parametrize("user_handler", [False, True], ids=["no-handler", "user-handler"])
def test_sigterm_ends_a_script_run_cancelled_with_every_point(server, tmp_path, user_handler):
    proc, run_id, spool = start_script(server, tmp_path, user_handler)
    try:
        # a few probes stored, so there is something to lose
        assert wait_for(lambda: get_run(server.url, run_id)["step"] >= 10, 60)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    out, err = proc.stdout.read(), proc.stderr.read()
    run = get_run(server.url, run_id)
    assert run["status"] == "cancelled", (run, err)
    assert run["error"] == "terminated by SIGTERM", run
    steps = spooled_steps(spool)
    stored = httpx.get(f"{server.url}/api/runs/{run_id}/metrics", timeout=30).json()["step"]
    assert steps and stored == steps  # every probe, the last partial window included
    assert steps[-1] == run["step"] == run["summary"]["steps"]
    assert "Traceback" not in err, err
    assert "SIGTERM received; ending run" in err, err
    if user_handler:  # chained: the user's handler ran and chose the exit status
        assert "user handler ran" in out and proc.returncode == 7, (out, err)
    else:  # as Ctrl-C: one line, status 1
        assert proc.returncode == 1, err
        assert "bnlab: terminated by SIGTERM" in err, err


@pytest.fixture(autouse=True)
def no_open_runs():
    """Runs other tests in this process left open keep bnlab's handler in place (it is put
    back when the last open run finishes): end them first."""
    for left in list(run_module._live):
        left.finish(timeout_s=1.0)


@pytest.fixture
def own_handler():
    """A SIGTERM handler of this test process (a framework's graceful-stop flag), restored."""
    seen: list[int] = []

    def handler(signum, _frame):
        seen.append(signum)

    before = signal.signal(signal.SIGTERM, handler)
    try:
        yield handler, seen
    finally:
        signal.signal(signal.SIGTERM, before)


def finish_line(run) -> dict:
    return json.loads(run.spool_path.read_text().splitlines()[-1])


def test_a_framework_handler_is_chained_and_put_back(own_handler, tmp_path):
    """A handler that only sets a flag (Lightning's graceful stop): called, the loop stops
    itself, finish() without a status ends the run cancelled with the reason; the handler is
    in place again afterwards."""
    handler, seen = own_handler
    run = bnlab.init(name="chained", mode="offline", dir=tmp_path)
    assert signal.getsignal(signal.SIGTERM) is run_module._on_stop_signal
    for _ in range(3):
        run.step(loss=1.0)
    os.kill(os.getpid(), signal.SIGTERM)
    assert wait_for(lambda: seen, 5)  # delivered to the main thread, then chained
    assert seen == [signal.SIGTERM]
    run.finish()
    end = finish_line(run)
    assert (end["status"], end["error"]) == ("cancelled", "terminated by SIGTERM")
    assert signal.getsignal(signal.SIGTERM) is handler  # put back
    later = bnlab.init(name="after", mode="offline", dir=tmp_path / "b")
    later.finish()  # a new run after the signal is not cancelled by it
    assert finish_line(later)["status"] == "succeeded"
    assert signal.getsignal(signal.SIGTERM) is handler


def test_with_run_ends_cancelled_on_terminated(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(run_module.Terminated):
        with bnlab.init(name="with", mode="offline", dir=tmp_path) as run:
            run.step(loss=1.0)
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes of the main thread
                time.sleep(0.01)
    end = finish_line(run)
    assert (end["status"], end["error"]) == ("cancelled", "terminated by SIGTERM")
    assert signal.getsignal(signal.SIGTERM) == before


def test_ignored_sigterm_and_other_threads_are_left_alone(tmp_path):
    before = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        run = bnlab.init(name="ignored", mode="offline", dir=tmp_path)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # the user said so
        run.finish()
    finally:
        signal.signal(signal.SIGTERM, before)
    made: list = []
    t = threading.Thread(
        target=lambda: made.append(bnlab.init(name="thread", mode="offline", dir=tmp_path / "t"))
    )
    t.start()
    t.join(30)
    assert made and signal.getsignal(signal.SIGTERM) == before  # no error, nothing changed
    made[0].finish()
