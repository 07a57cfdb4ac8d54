"""Every example in docs/integrations.md runs as it stands (issue 23: "a short section per
integration, each runnable as it stands"): each python block is a script run in a fresh
folder against a real `bnlab serve` (BNLAB_URL set, as a user would), the DDP one under
torchrun with 2 processes, the shell block as the command it shows (its server's URL for the
documented one); each must exit 0 and leave the run it promises on the server."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bnlab.integrations.itg import get, runs_named, sqlite_server
from tests.bnlab.sdk.servers import REPO
from tests.utils.net import free_port

DOC = REPO / "docs" / "integrations.md"
BLOCK = re.compile(r"^## (.+?)$|^```(python|bash)\n(.*?)^```", re.M | re.S)


def blocks() -> list[tuple[str, str, str]]:
    """(section, language, code) of every code block, in order."""
    out, section = [], ""
    for m in BLOCK.finditer(DOC.read_text()):
        if m.group(1):
            section = m.group(1)
        else:
            out.append((section, m.group(2), m.group(3)))
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with sqlite_server(tmp_path_factory.mktemp("doc-server")) as s:
        yield s


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("doc-examples")  # one folder: the import reads tb-runs/


def test_every_section_has_its_example():
    sections = [s for s, _, _ in blocks()]
    for wanted in ("Lightning", "Hugging Face Trainer", "Accelerate", "Plain DDP and torchrun"):
        assert wanted in sections


@pytest.mark.parametrize("section, lang, code", blocks(), ids=[b[0] for b in blocks()])
def test_the_example_runs(server, folder, section, lang, code):
    env = {
        **os.environ,
        "BNLAB_URL": server.url,
        "BNLAB_SPOOL_DIR": str(folder / "spool"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
        "WANDB_MODE": "offline",
    }
    env.pop("RANK", None)
    if lang == "bash":
        cmd = shlex.split(code.replace("http://127.0.0.1:8000", server.url))
        assert cmd[0] == "bnlab"
        cmd = [sys.executable, "-c", "from bnlab.cli import app; app()", *cmd[1:]]
    elif "torchrun" in section.lower():
        script = folder / "train_ddp.py"
        script.write_text(code)
        port = f"--master_port={free_port()}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", port]
        cmd += ["--master_addr=127.0.0.1", str(script)]
    else:
        script = folder / f"example_{re.sub(r'[^a-z]+', '_', section.lower())}.py"
        script.write_text(code)
        cmd = [sys.executable, str(script)]
    done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "Traceback" not in done.stderr, done.stderr[-5000:]
    if lang == "bash":
        assert "mirror-example: run" in done.stdout, done.stdout
        return
    started = re.findall(r"bnlab: run (\d+) started: (\S+)", done.stderr)
    assert len(started) == 1, done.stderr[-3000:]  # one run, even from two ranks
    run = get(server, f"/api/runs/{started[0][0]}")
    assert started[0][1] == f"{server.url}/runs/{run['id']}"
    assert run["status"] == "succeeded", run
    assert run["layer_names"], run  # its BatchNorm layers were probed
    if "DDP" in section:
        assert len(runs_named(server, "ddp example")) == 1
