"""Bulk, idempotent writes of probe points: one run-level row per (run, step), one row per
(run, layer, step). A retried flush overwrites the same rows, so no point is ever stored twice.

PostgreSQL: COPY into a temporary table, then one `INSERT ... SELECT ... ON CONFLICT DO UPDATE`
(COPY is the fastest way in; the upsert makes it idempotent). SQLite: executemany of
`INSERT ... ON CONFLICT DO UPDATE`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from operator import itemgetter
from typing import Any

from sqlalchemy import Table
from sqlalchemy.orm import Session

from backend.db.models import LAYER_KEYS, METRIC_KEYS, LayerStat, RunMetric

METRIC_COLS = ("run_id", "step", *METRIC_KEYS)
LAYER_COLS = ("run_id", "layer", "step", *LAYER_KEYS)


_layer_values = itemgetter(*LAYER_KEYS)


def _parts(record: Any) -> tuple[int, Mapping[str, Any], Iterable[Mapping[str, Any]]]:
    """(step, metrics, layers) of a ProbeRecord-like object or a plain dict (the backend never
    imports the worker, so records are duck-typed)."""
    if isinstance(record, Mapping):
        return int(record["step"]), record.get("metrics") or {}, record.get("layers") or ()
    return int(record.step), record.metrics or {}, record.layers or ()


def split_records(run_id: int, records: Iterable[Any]) -> tuple[list[tuple], list[tuple]]:
    """Probe records → (metric rows, layer rows) as tuples in METRIC_COLS / LAYER_COLS order.
    The last record of a step wins, so one batch never holds a key twice. Values pass through
    unconverted (the hot loop of ingest: psycopg adapts Python and NumPy numbers alike)."""
    metrics: dict[int, tuple] = {}
    layers: dict[tuple[int, int], tuple] = {}
    for rec in records:
        step, m, layer_dicts = _parts(rec)
        metrics[step] = (run_id, step, *[m.get(k) for k in METRIC_KEYS])
        for i, layer in enumerate(layer_dicts):
            index = layer.get("index", i)
            try:
                values = _layer_values(layer)
            except KeyError:  # a partial layer dict: missing statistics are NULL
                values = tuple(layer.get(k) for k in LAYER_KEYS)
            layers[(index, step)] = (run_id, index, step, *values)
    return list(metrics.values()), list(layers.values())


def insert_points(*, session: Session, run_id: int, records: Iterable[Any]) -> tuple[int, int]:
    """Upsert the records' points; returns (metric rows, layer rows) written. Does not commit."""
    metric_rows, layer_rows = split_records(run_id, records)
    write = _copy_upsert if session.get_bind().dialect.name == "postgresql" else _executemany_upsert
    if metric_rows:
        write(session, RunMetric.__table__, METRIC_COLS, ("run_id", "step"), metric_rows)
    if layer_rows:
        write(session, LayerStat.__table__, LAYER_COLS, ("run_id", "layer", "step"), layer_rows)
    return len(metric_rows), len(layer_rows)


def _executemany_upsert(session: Session, table: Table, cols: tuple[str, ...],
                        keys: tuple[str, ...], rows: list[tuple]) -> None:
    from sqlalchemy.dialects.sqlite import insert

    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(keys),
        set_={c: stmt.excluded[c] for c in cols if c not in keys},
    )
    # sqlite3 binds only Python numbers: convert NumPy scalars here (not in the PostgreSQL path).
    session.execute(stmt, [{c: v if v is None or type(v) in (int, float) else float(v)
                            for c, v in zip(cols, row)} for row in rows])


def _copy_upsert(session: Session, table: Table, cols: tuple[str, ...],
                 keys: tuple[str, ...], rows: list[tuple]) -> None:
    # The raw psycopg 3 connection inside the session's transaction: COPY needs the driver API.
    dbapi = session.connection().connection.driver_connection
    tmp = f"_ingest_{table.name}"
    col_list = ", ".join(cols)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c not in keys)
    with dbapi.cursor() as cur:
        # ON COMMIT DROP: the temp table lives for this transaction only; retries start clean.
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {tmp} "
                    f"(LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DROP")
        cur.execute(f"TRUNCATE {tmp}")
        with cur.copy(f"COPY {tmp} ({col_list}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(f"INSERT INTO {table.name} ({col_list}) SELECT {col_list} FROM {tmp} "
                    f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}")
