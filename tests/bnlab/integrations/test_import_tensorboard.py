"""`bnlab import tensorboard LOGDIR` (issue 23 item 3): real TensorBoard event files (PyTorch's
SummaryWriter, simple values and the tensor-style scalars TF2 writes) read into a real `bnlab
serve`: one run per folder, every scalar at its step, tags the server does not take renamed;
importing again finds the same runs and stores each point once."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from torch.utils.tensorboard import SummaryWriter

from tests.bnlab.integrations.itg import get, sqlite_server
from tests.bnlab.sdk.servers import REPO


def write_logdir(root):
    for run, scale in (("a", 1.0), ("nested/b", 2.0)):
        w = SummaryWriter(str(root / run))
        for step in range(0, 50, 10):
            w.add_scalar("loss", scale / (step + 1), step)
            w.add_scalar("val/acc", 0.5 + step / 100, step)
            w.add_scalar("weird tag!", scale * step, step, new_style=True)  # a tensor scalar
        w.close()


def bnlab_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-c", "from bnlab.cli import app; app()", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_import_tensorboard_logdir(tmp_path):
    logdir = tmp_path / "runs"
    write_logdir(logdir)
    with sqlite_server(tmp_path / "server") as server:
        env = {"BNLAB_SPOOL_DIR": str(tmp_path / "spool")}
        first = bnlab_cli("import", "tensorboard", str(logdir), "--url", server.url, env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        runs = {r["name"]: r for r in get(server, "/api/runs", tag="tensorboard")["data"]}
        assert set(runs) == {"a", "nested/b"}
        a, b = runs["a"], runs["nested/b"]
        assert a["status"] == "succeeded" and "imported" in a["tags"]
        assert a["config"]["imported_from"] == str((logdir / "a").resolve())
        extra = get(server, f"/api/runs/{b['id']}/extra-metrics")["metrics"]
        assert extra["loss"]["step"] == [0, 10, 20, 30, 40]
        # TensorBoard keeps float32
        want = [2.0 / (s + 1) for s in range(0, 50, 10)]
        assert extra["loss"]["value"] == pytest.approx(want, rel=1e-6)
        assert extra["val/acc"]["value"][-1] == pytest.approx(0.9, rel=1e-6)
        assert extra["weird_tag_"]["value"] == [2.0 * s for s in range(0, 50, 10)]
        wall = get(server, f"/api/runs/{b['id']}/metrics")
        assert wall["step"] == [0, 10, 20, 30, 40] and None not in wall["wall_time"]
        assert b["summary"]["tensorboard_tags"]["weird tag!"] == "weird_tag_"
        assert f"run {b['id']}: 5 steps of 3 scalars, succeeded" in first.stdout

        again = bnlab_cli("import", "tensorboard", str(logdir), "--url", server.url, env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        same = {r["name"]: r["id"] for r in get(server, "/api/runs", tag="tensorboard")["data"]}
        assert same == {"a": a["id"], "nested/b": b["id"]}  # the same runs, no copies
        assert get(server, f"/api/runs/{b['id']}/extra-metrics")["metrics"] == extra

        empty = bnlab_cli("import", "tensorboard", str(tmp_path / "spool"), "--url", server.url)
        assert empty.returncode == 2 and "no TensorBoard event files" in empty.stderr
        httpx.get(server.url, timeout=30)
