"""Layer points into layer_stats with a NumPy-built binary COPY: the server's half of the wire
format (bnlab/core/wire.py parses the SDK's binary body into the arrays written here).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from backend.crud.ingest import write_rows
from bnlab.core.registry import LAYER_KEYS

PGCOPY_HEAD = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8  # signature, flags, header extension
PGCOPY_TAIL = b"\xff\xff"
_TMP = "_ingest_columns"


def write(session: Session, run_id: int, index: np.ndarray, values: np.ndarray) -> int:
    """Upsert the rows into layer_stats (NaN stored as NULL); returns the rows written."""
    if not len(index):
        return 0
    cols = ("run_id", "layer", "step", *LAYER_KEYS)
    if session.get_bind().dialect.name != "postgresql":
        rows = [
            (run_id, int(layer), int(step), *[None if v != v else v for v in vals])
            for (layer, step), vals in zip(index.tolist(), values.tolist(), strict=True)
        ]
        return write_rows(session=session, metric_rows=[], layer_rows=rows)[1]
    fields = [("n", ">i2")]
    for c in cols:
        fields += [(f"{c}_len", ">i4"), (c, ">i4" if c in ("run_id", "layer", "step") else ">f8")]
    rows = np.empty(len(index), dtype=np.dtype(fields))
    rows["n"] = len(cols)
    for c in cols:
        rows[f"{c}_len"] = 4 if c in ("run_id", "layer", "step") else 8
    rows["run_id"], rows["layer"], rows["step"] = run_id, index[:, 0], index[:, 1]
    for j, k in enumerate(LAYER_KEYS):
        rows[k] = values[:, j]
    dbapi = session.connection().connection.driver_connection
    col_list = ", ".join(cols)
    # NaN travels in the fixed-width COPY rows and becomes NULL in the INSERT (PostgreSQL's
    # NaN equals NaN, so NULLIF finds it): NULLs in the stream would make rows variable-length.
    select = ", ".join(
        ["run_id", "layer", "step"] + [f"NULLIF({k}, 'NaN'::float8)" for k in LAYER_KEYS]
    )
    updates = ", ".join(f"{k} = EXCLUDED.{k}" for k in LAYER_KEYS)
    stream = PGCOPY_HEAD + rows.tobytes() + PGCOPY_TAIL
    with dbapi.cursor() as cur:
        if not np.isnan(values).any() and _only_new_steps(cur, run_id, index):
            # A run appending its next steps with every value measured: straight into the
            # table (nothing to turn into NULL, nothing to conflict with; ~1.3x the upsert).
            with cur.copy(f"COPY layer_stats ({col_list}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(stream)
            return len(index)
        cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_TMP} "
            "(LIKE layer_stats INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        cur.execute(f"DELETE FROM {_TMP}")
        with cur.copy(f"COPY {_TMP} ({col_list}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(stream)
        cur.execute(
            f"INSERT INTO layer_stats ({col_list}) SELECT {select} FROM {_TMP} "
            f"ON CONFLICT (run_id, layer, step) DO UPDATE SET {updates}"
        )
    return len(index)


def _only_new_steps(cur: Any, run_id: int, index: np.ndarray) -> bool:
    """No stored point of these layers at or after the batch's first step (one index range
    scan). The caller holds the run row's lock, so no other writer adds one meanwhile."""
    layers = np.unique(index[:, 0]).tolist()
    cur.execute(
        "SELECT EXISTS (SELECT 1 FROM layer_stats WHERE run_id = %s AND layer = ANY(%s) "
        "AND step >= %s)",
        (run_id, layers, int(index[:, 1].min())),
    )
    return not cur.fetchone()[0]
