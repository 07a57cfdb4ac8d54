"""Reads of runs' stored series, columnar, optionally downsampled (writes: crud/ingest.py).

Values come back as float64 numpy arrays (NaN where nothing or a non-finite value was stored);
the API encodes NaN as null. The `*_many` reads serve any number of runs with one query per
source (packs, rows), so a compare view costs a few queries, not three per run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import bindparam, func, select, text
from sqlalchemy.orm import Session

from backend.crud import packs
from backend.crud.downsample import MIN_POINTS, bucket_indices
from backend.db.models import LayerStat, Run, RunMetric
from bnlab.core.errors import FieldError
from bnlab.core.registry import LAYER_KEYS, METRIC_KEYS
from bnlab.core.schema.metrics import MAX_LAYER_VALUES, MAX_LAYERS_PER_READ

Columns = dict[str, np.ndarray]
# kind → (table, model, leading sort columns, value keys)
KINDS = {
    "metrics": ("run_metrics", RunMetric, ("step",), METRIC_KEYS),
    "layers": ("layer_stats", LayerStat, ("layer", "step"), LAYER_KEYS),
}


def _table(rows: Sequence[tuple], width: int) -> np.ndarray:
    """Rows of numbers/None → a (width, n) float array with NaN for None (portable path)."""
    if not rows:
        return np.empty((width, 0))
    # Column by column: numpy converts a flat tuple of floats far faster than a list of rows.
    return np.array([np.array(col, dtype=np.float64) for col in zip(*rows, strict=True)])


def _is_pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _pg_tables(
    session: Session,
    table: str,
    columns: Sequence[str],
    run_ids: Sequence[int],
    layers: Sequence[int] | None = None,
) -> dict[int, np.ndarray]:
    """PostgreSQL row path: per run, a (len(columns), n) array from one bytea.

    The database packs every row's values as big-endian float8 into a single bytea per run (one
    aggregate), which numpy reads in one call: about 4x less API CPU than a binary COPY (psycopg
    yields one Python chunk per row) and 10x less than fetching rows. Rows are sorted here, not
    in the aggregate (cheaper in numpy). NULL becomes NaN in the database, so every row has the
    same size. `columns` come from the models' whitelists; the sort keys are the leading ones.
    """
    packed = " || ".join(f"float8send(coalesce({c}::float8, 'NaN'::float8))" for c in columns)
    only = " AND layer IN :layers" if layers is not None else ""
    sql = text(
        f"SELECT run_id, string_agg({packed}, ''::bytea) FROM {table} "
        f"WHERE run_id IN :ids{only} GROUP BY run_id"
    ).bindparams(bindparam("ids", expanding=True))
    params: dict[str, list[int]] = {"ids": list(run_ids)}
    if layers is not None:
        sql = sql.bindparams(bindparam("layers", expanding=True))
        params["layers"] = list(layers)
    keys = 2 if "layer" in columns else 1  # (layer, step) or (step,)
    out = {}
    for run_id, buf in session.execute(sql, params):
        table_ = np.frombuffer(buf, dtype=">f8").reshape(-1, len(columns)).T.astype(np.float64)
        order = np.lexsort(table_[keys - 1 :: -1])  # lexsort's last key is the primary one
        out[run_id] = np.ascontiguousarray(table_[:, order])
    return out


def _portable_tables(
    session: Session,
    model: type,
    columns: Sequence[str],
    run_ids: Sequence[int],
    layers: Sequence[int] | None = None,
) -> dict[int, np.ndarray]:
    """Any database: rows sorted by run and the leading columns, split by run."""
    cols = [getattr(model, c) for c in columns]
    order = [model.run_id, *cols[: 2 if "layer" in columns else 1]]
    query = select(model.run_id, *cols).where(model.run_id.in_(list(run_ids)))
    if layers is not None:
        query = query.where(model.layer.in_(list(layers)))
    rows = session.execute(query.order_by(*order)).all()
    return {
        i: np.ascontiguousarray(part) for i, part in _split_by_first(_table(rows, 1 + len(cols)))
    }


def _live_tables(
    session: Session,
    kind: str,
    columns: Sequence[str],
    run_ids: Sequence[int],
    layers: Sequence[int] | None = None,
) -> dict[int, np.ndarray]:
    """The stored rows of `run_ids` (every id present; empty arrays for runs without points),
    of the layers `layers` only when given (kind "layers")."""
    name, model, _, _ = KINDS[kind]
    found = {}
    if run_ids and _is_pg(session):
        found = _pg_tables(session, name, columns, run_ids, layers)
    elif run_ids:
        found = _portable_tables(session, model, columns, run_ids, layers)
    return {i: found.get(i, np.empty((len(columns), 0))) for i in run_ids}


def _tables(
    session: Session,
    runs: Sequence[Run],
    kind: str,
    keys: Sequence[str],
    subsets: dict[int, tuple[int, ...]] | None = None,
) -> dict[int, np.ndarray]:
    """Per run: (leading columns + keys, n) sorted. Ended runs are read from packs on PostgreSQL;
    an ended run without a current pack of these keys is read from its rows and the keys packed
    for the next reader (the reconciler packs every key of ended runs ahead of readers).

    `subsets` (kind "layers"): per run id, the only layers to read. Those runs are read from
    their rows, filtered by the (run_id, layer, step) key, so the work is in the layers asked
    for, not in all the run has (a pack holds every layer)."""
    _, _, leading, _ = KINDS[kind]
    columns = [*leading, *keys]
    out: dict[int, np.ndarray] = {}
    subsets = subsets or {}
    by_subset: dict[tuple[int, ...], list[int]] = {}
    for run in runs:
        if run.id in subsets:
            by_subset.setdefault(subsets[run.id], []).append(run.id)
    for layers, ids in by_subset.items():
        out.update(_live_tables(session, kind, columns, ids, layers))
    runs = [r for r in runs if r.id not in subsets]
    if packs.usable(session):
        out.update(packs.load(session, runs, kind, columns))
        unpacked = [r for r in runs if r.id not in out and packs.signature(r) is not None]
        if unpacked:
            tables = _live_tables(session, kind, columns, [r.id for r in unpacked])
            packs.store(session, [(r, tables[r.id]) for r in unpacked], kind, columns)
            out.update(tables)
    live = [r.id for r in runs if r.id not in out]
    if live:
        out.update(_live_tables(session, kind, columns, live))
    return out


def parse_layers(values: Sequence[str] | None, field: str = "layers") -> tuple[int, ...] | None:
    """`?layers=0-3,7&layers=9` → (0, 1, 2, 3, 7, 9): the layer indices asked for, sorted, each
    once; None when none were given. A 422 naming `field` past MAX_LAYERS_PER_READ (counted
    before a range is expanded, so `0-2000000000` costs nothing)."""
    items = [v.strip() for item in values or [] for v in item.split(",") if v.strip()]
    if not items:
        return None
    spans = []
    for item in items:
        m = re.fullmatch(r"(\d{1,10})(?:-(\d{1,10}))?", item)
        lo = int(m.group(1)) if m else -1
        hi = int(m.group(2)) if m and m.group(2) else lo
        if not m or hi < lo or hi > 2**31 - 1:
            raise FieldError(field, f"layer indices or ranges like 0-3,7; got {item!r}", "query")
        spans.append((lo, hi))
    merged: list[list[int]] = []  # overlapping spans merged, so each index counts once
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    count = sum(hi - lo + 1 for lo, hi in merged)
    if count > MAX_LAYERS_PER_READ:
        raise FieldError(
            field, f"at most {MAX_LAYERS_PER_READ} layers per read, got {count}", "query"
        )
    return tuple(i for lo, hi in merged for i in range(lo, hi + 1))


@dataclass(frozen=True)
class LayerPlan:
    """What one run's layers answer holds: which layers, how many points each at most, whether
    layers were left out, and how many the run has."""

    layers: tuple[int, ...]
    max_points: int
    truncated: bool
    total: int


def plan_layers(
    total: int,
    asked: tuple[int, ...] | None,
    n_columns: int,
    max_points: int | None,
    budget: int = MAX_LAYER_VALUES,
) -> LayerPlan:
    """Fit a read into `budget` values: layers x points per layer x columns. Asked layers that
    cannot all get MIN_POINTS points are a 422 naming `layers`; by default the first layers
    that fit are read (at most MAX_LAYERS_PER_READ) and the answer says it is truncated."""
    fit = max(1, budget // (n_columns * MIN_POINTS))
    if asked is not None:
        layers = tuple(i for i in asked if i < total)
        if len(layers) > fit:
            raise FieldError(
                "layers",
                f"{len(layers)} layers of {n_columns} columns at {MIN_POINTS} points or more "
                f"pass this answer's cap of {budget:,} values: ask for at most {fit} layers "
                "(or fewer keys, or fewer runs)",
                "query",
            )
    else:
        layers = tuple(range(min(total, MAX_LAYERS_PER_READ, fit)))
    per_layer = budget // (n_columns * max(1, len(layers)))
    return LayerPlan(
        layers=layers,
        max_points=per_layer if max_points is None else min(max_points, per_layer),
        truncated=asked is None and len(layers) < total,
        total=total,
    )


def layer_counts(session: Session, run_ids: Sequence[int]) -> dict[int, int]:
    """Per run id, its highest stored layer index + 1 (0 without layers): one query whose
    per-run subquery is a seek on the (run_id, layer, step) key, not a scan of the rows."""
    if not run_ids:
        return {}
    top = (
        select(func.max(LayerStat.layer))
        .where(LayerStat.run_id == Run.id)
        .correlate(Run)
        .scalar_subquery()
    )
    rows = session.execute(select(Run.id, top).where(Run.id.in_(list(run_ids)))).all()
    found = {run_id: (-1 if high is None else high) + 1 for run_id, high in rows}
    return {i: found.get(i, 0) for i in run_ids}


Window = tuple[int | None, int | None]  # (step_min, step_max), inclusive; None: open


def _columns(
    step: np.ndarray,
    values: np.ndarray,
    keys: Sequence[str],
    max_points: int | None,
    window: Window = (None, None),
) -> Columns:
    # The window is cut before downsampling, so a zoomed chart gets up to max_points min/max
    # buckets inside what it shows (a re-fetch on zoom gains detail, never loses an extreme).
    lo, hi = window
    if lo is not None or hi is not None:
        inside = np.ones(step.shape, dtype=bool)
        if lo is not None:
            inside &= step >= lo
        if hi is not None:
            inside &= step <= hi
        step, values = step[inside], values[:, inside]
    if max_points is not None and step.size > max_points:
        keep = bucket_indices(values, max_points)
        step, values = step[keep], values[:, keep]
    out: Columns = {"step": step.astype(np.int64)}
    out.update((k, np.ascontiguousarray(v)) for k, v in zip(keys, values, strict=True))
    return out


def parse_keys(
    keys: Sequence[str] | None, known: Sequence[str] = METRIC_KEYS, field: str = "keys"
) -> list[str]:
    """`?keys=a,b&keys=c` → ["a", "b", "c"], every one in `known`; all of `known` when empty."""
    wanted = [k.strip() for item in keys or [] for k in item.split(",") if k.strip()]
    unknown = [k for k in wanted if k not in known and k != "step"]
    if unknown:
        raise FieldError(field, f"unknown keys {unknown}; known: {list(known)}", "query")
    return [k for k in dict.fromkeys(wanted) if k != "step"] or list(known)


def read_metrics_many(
    *,
    session: Session,
    runs: Sequence[Run],
    keys: Sequence[str] | None = None,
    max_points: int | None = None,
    window: Window = (None, None),
) -> dict[int, tuple[Columns, int]]:
    """Per run id: run-level series {"step", *keys} (inside the step window) and the number of
    stored points."""
    keys = parse_keys(keys)
    tables = _tables(session, runs, "metrics", keys)
    return {
        i: (_columns(t[0], t[1:], keys, max_points, window), t.shape[1]) for i, t in tables.items()
    }


def read_metrics(
    *,
    session: Session,
    run_id: int,
    keys: Sequence[str] | None = None,
    max_points: int | None = None,
) -> tuple[Columns, int]:
    """One run's series from its rows (no run row at hand, so no pack)."""
    keys = parse_keys(keys)
    table = _live_tables(session, "metrics", ["step", *keys], [run_id])[run_id]
    return _columns(table[0], table[1:], keys, max_points), table.shape[1]


def layer_name(run: Run, index: int) -> str:
    names = run.layer_names or []
    return names[index] if 0 <= index < len(names) else f"layer{index}"


def _split_by_first(table: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(value, rows after the first) per run of equal values in row 0 of a table sorted by it
    (per run id, or per layer index): each is one contiguous slice."""
    if not table.shape[1]:
        return []
    bounds = np.flatnonzero(np.diff(table[0])) + 1
    return [(int(part[0, 0]), part[1:]) for part in np.split(table, bounds, axis=1)]


LayerColumns = list[tuple[int, str, int, Columns]]


def read_layers_many(
    *,
    session: Session,
    runs: Sequence[Run],
    keys: Sequence[str] | None = None,
    max_points: int | None = None,
    window: Window = (None, None),
    layers: tuple[int, ...] | None = None,
    budget: int = MAX_LAYER_VALUES,
) -> dict[int, tuple[LayerColumns, int, LayerPlan]]:
    """Per run id: per BN layer (index, name, stored points, columns), the most stored points
    of a layer, and the plan that bounded the read (plan_layers: `layers` asked, or the first
    ones; at most `budget` values per run)."""
    keys = parse_keys(keys, LAYER_KEYS)
    totals = layer_counts(session, [r.id for r in runs])
    plans = {
        r.id: plan_layers(totals[r.id], layers, 1 + len(keys), max_points, budget) for r in runs
    }
    # A run read whole may use its pack; one read in part is filtered by layer in the database.
    subsets = {i: p.layers for i, p in plans.items() if p.layers != tuple(range(p.total))}
    tables = _tables(session, runs, "layers", keys, subsets)
    out = {}
    for run in runs:
        plan = plans[run.id]
        series = [
            (
                index,
                layer_name(run, index),
                part.shape[1],
                _columns(part[0], part[1:], keys, plan.max_points, window),
            )
            for index, part in _split_by_first(tables[run.id])
        ]
        out[run.id] = series, max((n for _, _, n, _ in series), default=0), plan
    return out


def read_layers(
    *, session: Session, run: Run, keys: Sequence[str] | None = None, max_points: int | None = None
) -> tuple[LayerColumns, int]:
    """One run's per-layer series (see read_layers_many)."""
    series, raw, _ = read_layers_many(
        session=session, runs=[run], keys=keys, max_points=max_points
    )[run.id]
    return series, raw


def pack_runs(*, session: Session, runs: Sequence[Run]) -> None:
    """Store packed copies of every series of these ended runs (PostgreSQL; no-op elsewhere)."""
    if not packs.usable(session):
        return
    for kind, (_, _, _, known) in KINDS.items():
        _tables(session, runs, kind, known)  # reads the rows and stores the packs


def pack_ended_runs(*, session: Session, limit: int = 20) -> list[int]:
    """Pack the series of up to `limit` ended runs that have no pack yet (the ones a worker did
    not pack when they ended: cancelled while queued, reaped, ...). Returns the ids packed."""
    if not packs.usable(session):
        return []
    runs = packs.unpacked_runs(session, limit)
    pack_runs(session=session, runs=runs)
    return [r.id for r in runs]
