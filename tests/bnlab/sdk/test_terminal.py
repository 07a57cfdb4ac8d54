"""What a script's terminal shows (issue 25 item 5, the SDK part): the run's dashboard URL when
it starts and how it ended, a progress line while it runs (tqdm; off with progress=False, and
by default off when stderr is no terminal), and offline the spool file and the exact
`bnlab sync` command, which, run as printed, sends the run to a real `bnlab serve`."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import httpx
import pytest
import torch
import torch.nn.functional as F

import bnlab
from tests.bnlab.sdk.models import TinyResNet, cifar_like
from tests.bnlab.sdk.servers import REPO, make_server

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = make_server(tmp_path_factory.mktemp("terminal-server")).start()
    try:
        yield s
    finally:
        s.stop()


def train(run, steps: int) -> None:
    model = TinyResNet()
    run.watch(model, held_out=cifar_like(32, seed=5), every=5)
    x, y = cifar_like(8 * steps)
    for k in range(steps):
        run.step(loss=F.cross_entropy(model(x[8 * k : 8 * k + 8]), y[8 * k : 8 * k + 8]))


def test_online_prints_the_run_page_and_its_end(server, tmp_path, capsys):
    run = bnlab.init(name="url", url=server.url, dir=tmp_path, total_steps=10, progress=False)
    train(run, 10)
    run.finish()
    err = capsys.readouterr().err
    page = f"{server.url}/runs/{run.id}"
    assert f"bnlab: run {run.id} started: {page}\n" in err, err
    assert f"bnlab: run {run.id} succeeded: {page}\n" in err, err
    assert httpx.get(page, timeout=30).status_code == 200  # the dashboard serves that page
    assert "step/s" not in err and "bnlab run" not in err  # progress=False: no bar


def test_offline_prints_the_spool_and_the_exact_sync_command(server, tmp_path, capsys):
    run = bnlab.init(name="offline", mode="offline", dir=tmp_path / "spool dir", progress=False)
    train(run, 10)
    run.finish()
    err = capsys.readouterr().err
    assert f"bnlab: offline: spooling to {run.spool_path}\n" in err, err
    commands = re.findall(r"send it with: (.+)", err)
    assert commands and set(commands) == {run.sync_command}
    assert run.sync_command == f"bnlab sync {shlex.quote(str(run.spool_path))}"
    # the command as printed (the path has a space: quoted), with the server in BNLAB_URL
    env = {**os.environ, "BNLAB_URL": server.url}
    done = subprocess.run(
        shlex.split(commands[0]), env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    runs = httpx.get(f"{server.url}/api/runs", params={"text": "offline"}, timeout=30).json()
    synced = [r for r in runs["data"] if r["name"] == "offline"]
    assert synced and synced[0]["status"] == "succeeded" and synced[0]["step"] == 10


SCRIPT = """
import sys, torch, torch.nn.functional as F
sys.path.insert(0, {repo!r})
import bnlab
from tests.bnlab.sdk.test_terminal import train
torch.set_num_threads(1)
run = bnlab.init(name="bar", url={url!r}, dir={dir!r}, total_steps=30{progress})
train(run, 30)
run.finish()
"""


@pytest.mark.parametrize("progress", [True, False, None], ids=["on", "off", "default"])
def test_the_progress_line(server, tmp_path, progress):
    """A real script's stderr (a pipe, as under a batch system): the bar only when asked for."""
    arg = "" if progress is None else f", progress={progress}"
    code = SCRIPT.format(repo=str(REPO), url=server.url, dir=str(tmp_path), progress=arg)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    run_id = int(re.search(r"bnlab: run (\d+) started", done.stderr).group(1))
    bar = re.findall(rf"bnlab run {run_id}: +100%\|.*\| 30/30 \[.*step/s.*val_acc=", done.stderr)
    if progress:
        assert bar, done.stderr  # step / total, rate, and the last probe's val_acc
    else:  # off, or by default on a stream that is no terminal (a batch job's log)
        assert not bar and "step/s" not in done.stderr, done.stderr
    assert f"bnlab: run {run_id} succeeded: {server.url}/runs/{run_id}" in done.stderr
