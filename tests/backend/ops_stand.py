"""A deployment's database and artifact store for the operations tests (tests/backend/
test_ops_*.py): PostgreSQL + a SeaweedFS S3 bucket, or SQLite + the data dir; the `bnlab`
command run against it as a subprocess; runs of every kind retention must tell apart."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from backend.artifacts import LocalStore, S3Store, make_store
from backend.db.migrate import upgrade
from backend.db.models import Base, LayerStat, Run, RunMetric, Sweep, Upload, utcnow
from backend.db.session import make_engine
from backend.ops import list_files
from backend.settings import Settings
from tests.utils.runs import create_random_run, make_config
from tests.utils.s3server import SeaweedS3
from tests.worker.procs import scratch_pg_database

KINDS = ("postgresql-s3", "sqlite-folder")

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


@contextmanager
def s3_server() -> Iterator[SeaweedS3]:
    s3 = SeaweedS3()
    s3.start()
    try:
        yield s3
    finally:
        s3.stop()


@contextmanager
def deployment(
    kind: str, data_dir: Path, s3: SeaweedS3 | None = None, prefix: str = "bnlab"
) -> Iterator[Deployment]:
    """A fresh deployment of `kind` (KINDS): a migrated database, an empty store (the S3
    variant under `prefix` in the server's bucket)."""
    data_dir.mkdir(parents=True)
    env = {
        **os.environ,
        "BNLAB_DATA_DIR": str(data_dir),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    for name in ("BNLAB_ARTIFACTS_URL", "BNLAB_DATABASE_URL", "BNLAB_API_TOKEN"):
        env.pop(name, None)
    if kind == "sqlite-folder":
        url = f"sqlite:///{data_dir / 'bnlab.db'}"
        upgrade(url)
        yield from _deployment(url, data_dir, env, {})
        return
    assert s3 is not None, "the S3 variant needs a server"
    with scratch_pg_database(prefix="bnlab_ops_") as url:
        yield from _deployment(url, data_dir, env, s3.env(prefix))


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


def tables(d: Deployment) -> dict[str, list[tuple]]:
    """Every row of every bnlab table, in primary-key order."""
    with d.sessions() as s:
        return {
            t.name: [tuple(r) for r in s.execute(select(t).order_by(*t.primary_key.columns))]
            for t in Base.metadata.sorted_tables
        }


def files(d: Deployment) -> dict[str, bytes]:
    """Every artifact's bytes, read through the store (S3: downloaded)."""
    out = {}
    for key in sorted(d.keys()):
        path = d.store.fetch(key)
        assert path is not None, key
        out[key] = path.read_bytes()
    return out
