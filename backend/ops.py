"""Operations without Docker (docs/operations.md): retention (`bnlab gc`) and backup / restore
(`bnlab backup DIR`, `bnlab restore DIR`).

Retention: ended runs of the chosen statuses that ended before a cutoff go with their series,
exports and checkpoints; so do files no run can need (those of a run that is gone, an ended
run's leftover checkpoint), and uploads no remaining run trains on and sweeps left without runs
when they are older than the cutoff too. `plan_gc` only reads; the CLI prints the plan
and deletes only with --delete.

Backup: the database first (pg_dump's snapshot, or SQLite's online backup API: both consistent
while the server runs), then the artifact store's files (checkpoints/, exports/, uploads/), so
every run in the dump finds its files (a run ending after the dump only adds some). The
manifest names the database kind, its Alembic revision, every table's row count and every
file's size and SHA-256; restore checks them and refuses a database that already holds runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from backend.artifacts import LocalStore, S3Store
from backend.crud.runs import delete_run
from backend.db.migrate import upgrade
from backend.db.models import (
    TERMINAL_STATUSES,
    Base,
    LayerStat,
    Run,
    RunMetric,
    Sweep,
    Upload,
    utcnow,
)
from backend.db.session import make_engine

# What the artifact store holds for runs (artifacts.py keys); nothing else under the data dir.
ARTIFACT_PREFIXES = ("checkpoints/", "exports/", "uploads/")
_RUN_FILE = re.compile(r"(?:checkpoints/run-(\d+)\.pt|exports/run-(\d+)/[^/]+)")
_UPLOAD_FILE = re.compile(r"uploads/([^/]+)\.npz")
_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([mhdw]?)")
_AGE_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks", "": "days"}
MANIFEST = "manifest.json"
FORMAT = 1


class OpsError(ValueError):
    """Bad input or a refused operation: the CLI prints it as one line."""


# --- the artifact store's files ---------------------------------------------------------


@dataclass(frozen=True)
class StoredFile:
    key: str
    size: int
    modified: datetime  # UTC


def list_files(store: LocalStore | S3Store, prefix: str) -> list[StoredFile]:
    """Every file under `prefix` in the store (artifacts.py has no listing: the API and the
    worker only ever ask for keys they know). Temporary files (.name.*.tmp) are left out."""
    if isinstance(store, LocalStore):
        base = store.root / prefix.rstrip("/")
        if not base.is_dir():
            return []
        out = []
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                st = path.stat()
                modified = datetime.fromtimestamp(st.st_mtime, UTC)
                out.append(
                    StoredFile(path.relative_to(store.root).as_posix(), st.st_size, modified)
                )
        return out
    head = f"{store.prefix}/" if store.prefix else ""
    pages = store.client.get_paginator("list_objects_v2").paginate(
        Bucket=store.bucket, Prefix=head + prefix
    )
    return [
        StoredFile(obj["Key"][len(head) :], int(obj["Size"]), obj["LastModified"])
        for page in pages
        for obj in page.get("Contents", [])
    ]


def _object_name(store: S3Store, key: str) -> str:
    return f"{store.prefix}/{key}" if store.prefix else key


# --- retention --------------------------------------------------------------------------


def parse_age(value: str) -> timedelta:
    """'30d', '12h', '2w', '90m' or a plain number of days."""
    found = _AGE.fullmatch(value.strip().lower())
    if not found or float(found.group(1)) <= 0:
        raise OpsError(f"--older-than: give an age like 30d, 12h, 2w or 90m, not {value!r}")
    return timedelta(**{_AGE_UNITS[found.group(2)]: float(found.group(1))})


def parse_statuses(value: str) -> tuple[str, ...]:
    """'failed,cancelled' or 'all' (every ended status); a run still queued or running is
    never collected."""
    wanted = [s.strip().lower() for s in value.split(",") if s.strip()]
    if wanted == ["all"]:
        return TERMINAL_STATUSES
    bad = [s for s in wanted if s not in TERMINAL_STATUSES]
    if bad or not wanted:
        raise OpsError(
            f"--status: {', '.join(bad) or 'nothing given'} is not an ended status; "
            f"choose from {', '.join(TERMINAL_STATUSES)} or all"
        )
    return tuple(dict.fromkeys(wanted))


@dataclass
class GcRun:
    id: int
    name: str
    status: str
    ended: datetime
    metric_rows: int
    layer_rows: int


@dataclass
class GcPlan:
    cutoff: datetime
    statuses: tuple[str, ...]
    runs: list[GcRun] = field(default_factory=list)
    files: list[tuple[StoredFile, str]] = field(default_factory=list)  # (file, why)
    uploads: list[str] = field(default_factory=list)  # upload rows
    sweeps: list[int] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(f.size for f, _ in self.files)

    @property
    def empty(self) -> bool:
        return not (self.runs or self.files or self.uploads or self.sweeps)


def plan_gc(
    *,
    session: Session,
    store: LocalStore | S3Store,
    older_than: timedelta,
    statuses: Sequence[str],
    uploads: bool = True,
    now: datetime | None = None,
) -> GcPlan:
    """What a collection would delete; reads only."""
    cutoff = (now or utcnow()) - older_than
    plan = GcPlan(cutoff=cutoff, statuses=tuple(statuses))
    ended = func.coalesce(Run.finished_at, Run.created_at)
    doomed = session.execute(
        select(Run.id, Run.name, Run.status, ended)
        .where(Run.status.in_(plan.statuses), ended < cutoff)
        .order_by(Run.id)
    ).all()
    metric_rows = _count_by_run(session, RunMetric.run_id, [r[0] for r in doomed])
    layer_rows = _count_by_run(session, LayerStat.run_id, [r[0] for r in doomed])
    plan.runs = [
        GcRun(i, name, status, when, metric_rows.get(i, 0), layer_rows.get(i, 0))
        for i, name, status, when in doomed
    ]
    doomed_ids = {r.id for r in plan.runs}
    status_of = dict(session.execute(select(Run.id, Run.status)).all())

    # A run's files are written only while its row exists and, for a checkpoint, only until
    # it ends (a retry is a new run): files of a run that is gone, and an ended run's leftover
    # checkpoint (its worker could not delete it), are garbage whatever their age.
    for f in list_files(store, "checkpoints/") + list_files(store, "exports/"):
        found = _RUN_FILE.fullmatch(f.key)
        if not found:
            continue
        run_id = int(found.group(1) or found.group(2))
        status = status_of.get(run_id)
        if run_id in doomed_ids:
            plan.files.append((f, f"run {run_id} is collected"))
        elif status is None:
            plan.files.append((f, f"run {run_id} no longer exists"))
        elif f.key.startswith("checkpoints/") and status in TERMINAL_STATUSES:
            plan.files.append((f, f"run {run_id} ended ({status}): nothing resumes from it"))

    if uploads:
        _plan_uploads(session, store, plan, doomed_ids)
    kept_sweeps = select(Run.sweep_id).where(Run.sweep_id.is_not(None))
    if doomed_ids:
        kept_sweeps = kept_sweeps.where(Run.id.not_in(doomed_ids))
    plan.sweeps = list(
        session.scalars(
            select(Sweep.id)
            .where(Sweep.created_at < cutoff, Sweep.id.not_in(kept_sweeps))
            .order_by(Sweep.id)
        )
    )
    return plan


def _count_by_run(session: Session, column: Any, ids: list[int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for start in range(0, len(ids), 500):  # bounded IN lists
        chunk = ids[start : start + 500]
        out.update(
            session.execute(
                select(column, func.count()).where(column.in_(chunk)).group_by(column)
            ).all()
        )
    return out


def _plan_uploads(
    session: Session, store: LocalStore | S3Store, plan: GcPlan, doomed_ids: set[int]
) -> None:
    """Uploads older than the cutoff that no run left after this collection trains on (a
    retried or resumed run needs its upload), and upload files without a row that are older
    than the cutoff too (an upload is stored a moment before its row is written)."""
    used_by = Run.config["dataset"]["upload_id"].as_string()
    used = select(used_by).where(used_by.is_not(None))
    if doomed_ids:
        used = used.where(Run.id.not_in(doomed_ids))
    in_use = set(session.scalars(used))
    rows = dict(session.execute(select(Upload.id, Upload.created_at)).all())
    plan.uploads = sorted(i for i, made in rows.items() if made < plan.cutoff and i not in in_use)
    gone = set(plan.uploads)
    for f in list_files(store, "uploads/"):
        found = _UPLOAD_FILE.fullmatch(f.key)
        if not found or found.group(1) in in_use:
            continue
        if found.group(1) in gone:
            plan.files.append((f, f"upload {found.group(1)} is collected"))
        elif found.group(1) not in rows and f.modified < plan.cutoff:
            plan.files.append((f, "no upload row names it"))


@dataclass
class GcDone:
    runs: int = 0
    files: int = 0
    bytes: int = 0
    uploads: int = 0
    sweeps: int = 0
    skipped: list[str] = field(default_factory=list)


def apply_gc(*, session: Session, store: LocalStore | S3Store, plan: GcPlan) -> GcDone:
    """Delete what `plan` lists. Each run goes in a transaction of its own (its rows and
    series, then its exports: crud.delete_run), so an interrupted collection leaves whole runs;
    a run whose status changed since the plan was made is skipped and named."""
    done = GcDone()
    for item in plan.runs:
        run = session.get(Run, item.id)
        if run is None or run.status != item.status:
            done.skipped.append(f"run {item.id}: changed since the plan")
            continue
        delete_run(session=session, run=run)
        done.runs += 1
    for f, _why in plan.files:
        store.delete_prefix(f.key)  # a key without a trailing "/": that one file, here and there
        done.files += 1
        done.bytes += f.size
    if plan.uploads:
        session.execute(delete(Upload).where(Upload.id.in_(plan.uploads)))
        session.commit()
        done.uploads = len(plan.uploads)
    for sweep_id in plan.sweeps:
        if session.scalar(select(func.count()).where(Run.sweep_id == sweep_id)):
            done.skipped.append(f"sweep {sweep_id}: has runs again")
            continue
        session.execute(delete(Sweep).where(Sweep.id == sweep_id))
        session.commit()
        done.sweeps += 1
    return done


# --- backup and restore -----------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _kind(url: str) -> str:
    name = make_url(url).get_backend_name()
    if name not in ("postgresql", "sqlite"):
        raise OpsError(f"database URL: bnlab backs up PostgreSQL or SQLite, not {name}")
    return name


def _libpq(url: str) -> tuple[list[str], dict[str, str]]:
    """pg_dump / pg_restore arguments for a SQLAlchemy URL: the password in the environment
    (PGPASSWORD), never on a command line that `ps` shows."""
    u = make_url(url)
    env = {**os.environ}
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    args = [f"--dbname={u.database}"]
    if u.host:
        args.append(f"--host={u.host}")
    if u.port:
        args.append(f"--port={u.port}")
    if u.username:
        args.append(f"--username={u.username}")
    if "sslmode" in u.query:
        env["PGSSLMODE"] = str(u.query["sslmode"])
    return args, env


def _pg_tool(name: str, args: list[str], env: dict[str, str]) -> None:
    exe = shutil.which(name)
    if exe is None:
        raise OpsError(
            f"{name} not found: install PostgreSQL's client (Debian: postgresql-client) at the "
            "server's major version or newer"
        )
    done = subprocess.run([exe, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise OpsError(f"{name} failed: {done.stderr.strip()[-2000:]}")


def _pg_dump(url: str, dest: Path) -> dict[str, int]:
    """pg_dump in the custom format (compressed; pg_restore takes it into any database name)
    of a snapshot this function exports and counts the tables in, so the manifest's counts are
    exactly the dump's while the server keeps writing."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar()
                counts = _counts(conn, set(inspect(conn).get_table_names()))
                args, env = _libpq(url)
                _pg_tool(
                    "pg_dump",
                    ["--format=custom", f"--snapshot={snapshot}", f"--file={dest}", *args],
                    env,
                )
    finally:
        engine.dispose()
    return counts


def _sqlite_copy(url: str, dest: Path) -> dict[str, int]:
    """SQLite's online backup API: a consistent copy while the server writes, made a single
    self-contained file (no -wal beside it), counted from the copy itself."""
    source = make_url(url).database or ""
    if not Path(source).is_file():
        raise OpsError(f"no SQLite database at {source}")
    with sqlite3.connect(source) as src, sqlite3.connect(dest) as dst:
        src.backup(dst)
    dst = sqlite3.connect(dest)
    try:
        dst.execute("PRAGMA journal_mode=DELETE")
        names = {r[0] for r in dst.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return {
            t.name: int(dst.execute(f'SELECT count(*) FROM "{t.name}"').fetchone()[0])
            for t in Base.metadata.sorted_tables
            if t.name in names
        }
    finally:
        dst.close()


def _counts(conn: Any, names: set[str]) -> dict[str, int]:
    return {
        t.name: int(conn.execute(select(func.count()).select_from(t)).scalar() or 0)
        for t in Base.metadata.sorted_tables
        if t.name in names
    }


def table_counts(url: str) -> dict[str, int]:
    """Rows per bnlab table (the manifest's check that a restore is whole)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return _counts(conn, set(inspect(conn).get_table_names()))
    finally:
        engine.dispose()


def _revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        if "alembic_version" not in inspect(engine).get_table_names():
            return None
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


@dataclass
class BackupDone:
    folder: Path
    database: str
    counts: dict[str, int]
    files: int
    bytes: int


def backup(
    *, url: str, store: LocalStore | S3Store, folder: Path, artifacts: bool = True
) -> BackupDone:
    """Write the database and the store's files into `folder` (new or empty)."""
    kind = _kind(url)
    if folder.exists() and any(folder.iterdir()):
        raise OpsError(f"{folder} is not empty: back up into a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "postgresql":
        dumped = "database.dump"
        counts = _pg_dump(url, folder / dumped)
    else:
        dumped = "database.sqlite"
        counts = _sqlite_copy(url, folder / dumped)
    files: dict[str, dict[str, Any]] = {}
    if artifacts:
        for prefix in ARTIFACT_PREFIXES:
            for f in list_files(store, prefix):
                dest = folder / "artifacts" / f.key
                dest.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(store, S3Store):
                    store.client.download_file(store.bucket, _object_name(store, f.key), str(dest))
                else:
                    shutil.copyfile(store.local_path(f.key), dest)
                files[f.key] = {"size": dest.stat().st_size, "sha256": _sha256(dest)}
    manifest = {
        "format": FORMAT,
        "created_at": utcnow().isoformat(),
        "database": kind,
        "database_file": dumped,
        "revision": _revision(url),
        "counts": counts,
        "files": files,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return BackupDone(folder, kind, counts, len(files), sum(v["size"] for v in files.values()))


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise OpsError(f"{path}: not a bnlab backup ({exc})") from exc
    if manifest.get("format") != FORMAT:
        raise OpsError(f"{path}: backup format {manifest.get('format')!r}, expected {FORMAT}")
    return manifest


@dataclass
class RestoreDone:
    counts: dict[str, int]
    files: int
    revision: str | None


def restore(*, url: str, store: LocalStore | S3Store, folder: Path) -> RestoreDone:
    """Restore a backup into an empty database and store, then migrate it to this version."""
    manifest = read_manifest(folder)
    kind = _kind(url)
    if kind != manifest["database"]:
        raise OpsError(
            f"the backup holds a {manifest['database']} database; the target is {kind} "
            "(restore into the same kind)"
        )
    dumped = folder / manifest["database_file"]
    if not dumped.is_file():
        raise OpsError(f"{dumped} is missing")
    for key, meta in manifest["files"].items():  # check every file before touching anything
        path = folder / "artifacts" / key
        if not path.is_file() or _sha256(path) != meta["sha256"]:
            raise OpsError(f"{path}: missing or damaged (SHA-256 differs from the manifest)")
    present = table_counts(url) if kind == "postgresql" or _sqlite_exists(url) else {}
    busy = {t: n for t, n in present.items() if n and t in ("runs", "sweeps", "uploads")}
    if busy:
        raise OpsError(
            "the target database is not empty ("
            + ", ".join(f"{n} {t}" for t, n in busy.items())
            + "): restore into a fresh database"
        )
    if kind == "postgresql":
        if present:  # empty, but migrated (a fresh stack's API did): the dump brings its own
            _drop_tables(url)
        args, env = _libpq(url)
        _pg_tool(
            "pg_restore",
            [
                "--no-owner",
                "--no-privileges",
                "--single-transaction",
                "--exit-on-error",
                *args,
                str(dumped),
            ],
            env,
        )
    else:
        target = Path(make_url(url).database or "")
        target.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):  # an empty database the server created, if any
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        with sqlite3.connect(dumped) as src, sqlite3.connect(target) as dst:
            src.backup(dst)
    counts = table_counts(url)
    short = {t: (n, counts.get(t)) for t, n in manifest["counts"].items() if counts.get(t) != n}
    if short:
        raise OpsError(f"restored row counts differ from the backup's: {short}")
    for key in manifest["files"]:
        store.put(key, folder / "artifacts" / key)
    upgrade(url)  # a backup of an older version: bring its schema to this one
    return RestoreDone(counts, len(manifest["files"]), _revision(url))


def _drop_tables(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            Base.metadata.drop_all(conn)
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    finally:
        engine.dispose()


def _sqlite_exists(url: str) -> bool:
    return Path(make_url(url).database or "").is_file()


def describe_plan(plan: GcPlan) -> Iterable[str]:
    """The plan as lines (the CLI prints them)."""
    when = plan.cutoff.strftime("%Y-%m-%d %H:%M UTC")
    yield f"runs ({', '.join(plan.statuses)}) ended before {when}: {len(plan.runs)}"
    for r in plan.runs:
        yield (
            f"  run {r.id} {r.status} {r.ended:%Y-%m-%d} {r.name!r}: "
            f"{r.metric_rows} metric rows, {r.layer_rows} layer rows"
        )
    yield f"files: {len(plan.files)} ({plan.bytes} bytes)"
    for f, why in plan.files:
        yield f"  {f.key} ({f.size} bytes): {why}"
    yield f"uploads no remaining run uses: {len(plan.uploads)}"
    for upload_id in plan.uploads:
        yield f"  upload {upload_id}"
    yield f"sweeps left without runs: {len(plan.sweeps)}"
    for sweep_id in plan.sweeps:
        yield f"  sweep {sweep_id}"


__all__ = [
    "OpsError",
    "apply_gc",
    "backup",
    "describe_plan",
    "list_files",
    "parse_age",
    "parse_statuses",
    "plan_gc",
    "restore",
]
