"""`bnlab serve` where it cannot start: one line saying what and where, a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.worker.procs import ROOT, free_port


@pytest.fixture
def read_only_dir(tmp_path) -> Iterator[Path]:
    """A folder nobody can write: chmod for a normal user; a read-only tmpfs for root (root
    ignores permission bits)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "none", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.parametrize("sub", ["", "data"])
def test_serve_on_read_only_data_dir_says_so_in_one_line(read_only_dir, sub):
    data_dir = read_only_dir / sub if sub else read_only_dir
    env = {k: v for k, v in os.environ.items() if not k.startswith("BNLAB_")}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bnlab.cli",
            "serve",
            "--data-dir",
            str(data_dir),
            "--port",
            str(free_port()),
            "--workers",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    assert out.returncode == 1, (out.stdout, out.stderr)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert "Traceback" not in out.stderr
    assert lines[-1].startswith("error: cannot write the data directory")
    assert str(data_dir) in lines[-1] and "Read-only" in lines[-1]
    assert len([line for line in lines if "error" in line.lower()]) == 1
