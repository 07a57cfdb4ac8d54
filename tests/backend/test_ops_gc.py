"""`bnlab gc` (issue 27 item 5): retention by age and status, run as the real command against
a real database and artifact store (PostgreSQL + a SeaweedFS S3 bucket, SQLite + the data
dir). Dry run first and by default; --delete deletes exactly what the dry run listed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from backend.artifacts import LocalStore, S3Store, make_store
from backend.db.migrate import upgrade
from backend.db.models import LayerStat, Run, RunMetric, Sweep, Upload, utcnow
from backend.db.session import make_engine
from backend.ops import list_files
from backend.settings import Settings
from tests.utils.runs import create_random_run, make_config
from tests.utils.s3server import SeaweedS3
from tests.worker.procs import scratch_pg_database

ROOT = Path(__file__).resolve().parents[2]
OLD = timedelta(days=40)
RECENT = timedelta(days=1)


@dataclass
class Deployment:
    url: str
    data_dir: Path
    env: dict[str, str]
    store: LocalStore | S3Store
    sessions: sessionmaker[Session]

    def bnlab(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bnlab.cli", *args],
            env=self.env,
            cwd=str(ROOT),
            capture_output=True,
            text=True,
            timeout=300,
        )

    def put(self, key: str, payload: bytes = b"x" * 100, age: timedelta | None = None) -> None:
        src = self.data_dir.parent / "src.bin"
        src.write_bytes(payload)
        self.store.put(key, src)
        if age is not None:  # only a folder's files can be made old: S3 sets LastModified
            stamp = (utcnow() - age).timestamp()
            os.utime(self.store.local_path(key), (stamp, stamp))

    def keys(self) -> set[str]:
        return {
            f.key
            for prefix in ("checkpoints/", "exports/", "uploads/")
            for f in list_files(self.store, prefix)
        }


@pytest.fixture(params=["postgresql-s3", "sqlite-folder"])
def deployment(request, tmp_path: Path) -> Iterator[Deployment]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = {
        **os.environ,
        "BNLAB_DATA_DIR": str(data_dir),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    for name in ("BNLAB_ARTIFACTS_URL", "BNLAB_DATABASE_URL", "BNLAB_API_TOKEN"):
        env.pop(name, None)
    if request.param == "sqlite-folder":
        url = f"sqlite:///{data_dir / 'bnlab.db'}"
        upgrade(url)
        yield from _deployment(url, data_dir, env, {})
        return
    s3 = SeaweedS3()
    s3.start()
    try:
        with scratch_pg_database(prefix="bnlab_gc_") as url:
            yield from _deployment(url, data_dir, env, s3.env("gc"))
    finally:
        s3.stop()


def _deployment(
    url: str, data_dir: Path, env: dict[str, str], s3_env: dict[str, str]
) -> Iterator[Deployment]:
    env = {**env, **s3_env, "BNLAB_DATABASE_URL": url}
    settings = Settings(
        data_dir=data_dir,
        BNLAB_DATABASE_URL=url,
        artifacts_url=s3_env.get("BNLAB_ARTIFACTS_URL"),
        s3_endpoint_url=s3_env.get("BNLAB_S3_ENDPOINT_URL"),
        s3_access_key=s3_env.get("BNLAB_S3_ACCESS_KEY"),
        s3_secret_key=s3_env.get("BNLAB_S3_SECRET_KEY"),
    )
    engine = make_engine(url)
    try:
        yield Deployment(
            url, data_dir, env, make_store(settings), sessionmaker(engine, expire_on_commit=False)
        )
    finally:
        engine.dispose()


def populate(d: Deployment) -> dict[str, int | str]:
    """Runs of every kind the collector must tell apart, with their files."""
    now = utcnow()
    ids: dict[str, int | str] = {}
    with d.sessions() as s:
        for name, made in (("upload_used", OLD), ("upload_unused", OLD), ("upload_new", RECENT)):
            upload_id = f"{name.replace('_', '')}0123"
            s.add(
                Upload(
                    id=upload_id,
                    filename=f"{name}.npz",
                    path=str(d.data_dir / "uploads" / f"{upload_id}.npz"),
                    size_bytes=100,
                    n_rows=500,
                    n_features=4,
                    n_classes=2,
                    created_at=now - made,
                )
            )
            d.put(f"uploads/{upload_id}.npz")
            ids[name] = upload_id
        sweeps = {
            n: Sweep(name=n, base={}, grid={}, created_at=now - OLD) for n in ("gone", "kept")
        }
        s.add_all(sweeps.values())
        s.commit()

        def run(key: str, status: str, ended: timedelta | None, **fields) -> int:
            r = create_random_run(s, status=status, n_steps=5, n_layers=2, seed=len(ids), **fields)
            r.created_at = now - OLD
            r.finished_at = None if ended is None else now - ended
            s.commit()
            ids[key] = r.id
            return r.id

        old_failed = run("old_failed", "failed", OLD, sweep_id=sweeps["gone"].id)
        new_failed = run(
            "new_failed",
            "failed",
            RECENT,
            sweep_id=sweeps["kept"].id,
            config=make_config(dataset__name="upload", dataset__upload_id=ids["upload_used"]),
        )
        old_ok = run("old_succeeded", "succeeded", OLD)
        old_running = run("old_running", "running", None)
        old_crashed = run("old_crashed", "crashed", OLD)
        ids["sweep_gone"], ids["sweep_kept"] = sweeps["gone"].id, sweeps["kept"].id
    for run_id in (old_failed, new_failed, old_ok, old_crashed):
        d.put(f"exports/run-{run_id}/model.npz", b"w" * 300)
    for run_id in (old_failed, old_ok, old_running):
        d.put(f"checkpoints/run-{run_id}.pt", b"c" * 500)
    d.put("exports/run-99999/model.npz")  # a run deleted while its store was away
    d.put("checkpoints/run-99998.pt")
    if isinstance(d.store, LocalStore):  # an upload file whose row never came: old and new
        d.put("uploads/rowlessold.npz", age=OLD)
        d.put("uploads/rowlessnew.npz")
    return ids


def state(d: Deployment) -> dict[str, object]:
    with d.sessions() as s:
        return {
            "runs": set(s.scalars(select(Run.id))),
            "metric_rows": s.scalar(select(func.count()).select_from(RunMetric)),
            "layer_rows": s.scalar(select(func.count()).select_from(LayerStat)),
            "uploads": set(s.scalars(select(Upload.id))),
            "sweeps": set(s.scalars(select(Sweep.id))),
            "keys": d.keys(),
        }


def test_collect_by_age_and_status_after_a_dry_run(deployment: Deployment) -> None:
    """Breaks: a deployment a year old: ended runs of every status, some old and some new, a
    run still running, files whose run is gone, leftover checkpoints, used and unused uploads.
    Must hold: the default is a dry run that prints the plan and deletes nothing; --delete
    removes exactly the old runs of the chosen statuses (rows, series, exports, checkpoint),
    the orphaned files, the unused old uploads and the emptied sweep, and nothing else; a
    second collection finds nothing."""
    d = deployment
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
