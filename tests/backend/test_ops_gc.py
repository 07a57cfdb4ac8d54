"""`bnlab gc` (issue 27 item 5): retention by age and status, run as the real command against
a real database and artifact store (PostgreSQL + a SeaweedFS S3 bucket, SQLite + the data
dir). Dry run first and by default; --delete deletes exactly what the dry run listed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from backend.artifacts import LocalStore
from tests.backend.ops_stand import KINDS, ROOT, Deployment, deployment, populate, s3_server, state


@pytest.fixture(params=KINDS)
def stand(request, tmp_path: Path) -> Iterator[Deployment]:
    with ExitStack() as stack:
        s3 = stack.enter_context(s3_server()) if request.param.endswith("s3") else None
        yield stack.enter_context(deployment(request.param, tmp_path / "data", s3, "gc"))


def test_collect_by_age_and_status_after_a_dry_run(stand: Deployment) -> None:
    """Breaks: a deployment a year old: ended runs of every status, some old and some new, a
    run still running, files whose run is gone, leftover checkpoints, used and unused uploads.
    Must hold: the default is a dry run that prints the plan and deletes nothing; --delete
    removes exactly the old runs of the chosen statuses (rows, series, exports, checkpoint),
    the orphaned files, the unused old uploads and the emptied sweep, and nothing else; a
    second collection finds nothing."""
    d = stand
    ids = populate(d)
    before = state(d)

    dry = d.bnlab("gc", "--older-than", "30d")
    assert dry.returncode == 0, dry.stderr
    assert state(d) == before, "a dry run deleted something"
    gone_runs = {ids["old_failed"], ids["old_crashed"]}
    listed = {int(line.split()[1]) for line in dry.stdout.splitlines() if line.startswith("  run ")}
    assert listed == gone_runs, dry.stdout
    assert "nothing deleted" in dry.stdout

    done = d.bnlab("gc", "--older-than", "30d", "--delete")
    assert done.returncode == 0, done.stderr
    after = state(d)
    assert after["runs"] == before["runs"] - gone_runs
    assert after["metric_rows"] == before["metric_rows"] - 5 * len(gone_runs)
    assert after["layer_rows"] == before["layer_rows"] - 10 * len(gone_runs)
    gone_keys = {
        f"exports/run-{ids['old_failed']}/model.npz",
        f"exports/run-{ids['old_crashed']}/model.npz",
        f"checkpoints/run-{ids['old_failed']}.pt",
        f"checkpoints/run-{ids['old_succeeded']}.pt",  # the run stays; nothing resumes from it
        "exports/run-99999/model.npz",
        "checkpoints/run-99998.pt",
        f"uploads/{ids['upload_unused']}.npz",
    }
    if isinstance(d.store, LocalStore):
        gone_keys.add("uploads/rowlessold.npz")
    assert before["keys"] - after["keys"] == gone_keys
    assert f"checkpoints/run-{ids['old_running']}.pt" in after["keys"]
    assert after["uploads"] == before["uploads"] - {ids["upload_unused"]}
    assert after["sweeps"] == before["sweeps"] - {ids["sweep_gone"]}
    assert f"deleted {len(gone_runs)} runs, {len(gone_keys)} files" in done.stdout

    again = d.bnlab("gc", "--older-than", "30d", "--delete")
    assert again.returncode == 0 and "deleted 0 runs, 0 files" in again.stdout, again.stdout
    assert state(d) == after

    everything = d.bnlab("gc", "--older-than", "30d", "--status", "all", "--delete")
    assert everything.returncode == 0, everything.stderr
    assert state(d)["runs"] == {ids["new_failed"], ids["old_running"]}


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--older-than", "soon"], "--older-than"),
        (["--older-than", "0d"], "--older-than"),
        (["--older-than", "30d", "--status", "running"], "--status"),
        (["--older-than", "30d", "--status", "failed,bogus"], "bogus"),
    ],
)
def test_refuse_bad_options_with_one_line(tmp_path: Path, args: list[str], named: str) -> None:
    """A bad age or a status that is not an ended one: exit 2, one line naming the option,
    no traceback, nothing read or deleted."""
    env = {**os.environ, "BNLAB_DATA_DIR": str(tmp_path)}
    env.pop("BNLAB_DATABASE_URL", None)
    out = subprocess.run(
        [sys.executable, "-m", "bnlab.cli", "gc", *args],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert named in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "bnlab.db").exists()
