"""Packed copies of ended runs' series (table series_packs, PostgreSQL): a read cache.

An ended run's points no longer change, so each of its series is kept once more as one bytea of
little-endian float64 values in stored order (sorted by step, or by layer then step). A compare
view then reads 20 runs x 6 series as 120 values instead of aggregating 160k rows (~300 ms of
PostgreSQL CPU). A pack is valid while its signature equals the run row's (status, step,
attempt, finish time) — the same rule as the API's in-memory cache — and is rebuilt otherwise.
SQLite (the single-user embedded default) keeps reading rows: the writes a pack needs would
contend with the worker for SQLite's one write lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
from sqlalchemy import exists, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from backend.db.models import TERMINAL_STATUSES, Run, SeriesPack

log = logging.getLogger(__name__)
DTYPE = "<f8"
_SELECT = (
    "SELECT run_id, key, signature, data FROM series_packs "
    "WHERE run_id = ANY(%s) AND kind = %s AND key = ANY(%s)"
)


def usable(session: Session) -> bool:
    """Packs are read with psycopg 3's binary cursor (bytea as raw bytes, not hex text)."""
    dialect = session.get_bind().dialect
    return dialect.name == "postgresql" and dialect.driver == "psycopg"


def signature(run: Run) -> str | None:
    """What a pack of `run` must carry to be current; None while the run may still add points."""
    if run.status not in TERMINAL_STATUSES:
        return None
    finished = run.finished_at.isoformat() if run.finished_at else ""
    return f"{run.status}|{run.step}|{run.attempt}|{finished}"


def load(
    session: Session, runs: Iterable[Run], kind: str, columns: Sequence[str]
) -> dict[int, np.ndarray]:
    """Per run with a current pack of every column: a (len(columns), n) float64 array."""
    wanted = {run.id: sig for run in runs if (sig := signature(run)) is not None}
    if not wanted:
        return {}
    raw = session.connection().connection.driver_connection
    with raw.cursor(binary=True) as cur:
        cur.execute(_SELECT, (list(wanted), kind, list(columns)))
        rows = cur.fetchall()
    parts: dict[int, dict[str, bytes]] = {}
    for run_id, key, sig, data in rows:
        if sig == wanted[run_id]:
            parts.setdefault(run_id, {})[key] = data
    out = {}
    for run_id, found in parts.items():
        sizes = {len(found.get(c, b"")) for c in columns}
        if len(found) == len(columns) and len(sizes) == 1:
            out[run_id] = np.stack([np.frombuffer(found[c], dtype=DTYPE) for c in columns])
    return out


def store(
    session: Session, tables: Iterable[tuple[Run, np.ndarray]], kind: str, columns: Sequence[str]
) -> None:
    """Write (or replace) the packs of ended runs and commit; a failure only costs the cache."""
    rows = [
        {
            "run_id": run.id,
            "kind": kind,
            "key": c,
            "signature": sig,
            "data": np.ascontiguousarray(table[i], dtype=DTYPE).tobytes(),
        }
        for run, table in tables
        if (sig := signature(run)) is not None
        for i, c in enumerate(columns)
    ]
    if not rows:
        return
    # One lock order for every writer (a reader and the reconciler may pack the same run with
    # other key sets at once): without it, two upserts can deadlock.
    rows.sort(key=lambda row: (row["run_id"], row["kind"], row["key"]))
    stmt = pg_insert(SeriesPack)
    # Two readers may pack the same run at once: the later one simply overwrites.
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id", "kind", "key"],
        set_={"signature": stmt.excluded.signature, "data": stmt.excluded.data},
    )
    try:
        with session.begin_nested():
            session.execute(stmt, rows)
        session.commit()
    except DBAPIError as exc:  # e.g. a read-only replica: serve the answer anyway
        session.rollback()
        log.warning("could not store series packs: %s", type(exc.orig).__name__)


def unpacked_runs(session: Session, limit: int) -> list[Run]:
    """Ended runs without any pack yet, the most recently finished first."""
    packed = exists().where(SeriesPack.run_id == Run.id)
    return list(
        session.scalars(
            select(Run)
            .where(Run.status.in_(TERMINAL_STATUSES), ~packed)
            .order_by(Run.finished_at.desc().nulls_last(), Run.id.desc())
            .limit(limit)
        )
    )
