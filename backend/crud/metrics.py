"""Reads of a run's stored series, columnar, optionally downsampled (writes: crud/ingest.py).

Values come back as float64 numpy arrays (NaN where nothing or a non-finite value was stored);
the API encodes NaN as null.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.crud.downsample import bucket_indices
from backend.crud.errors import FieldError
from backend.db.models import LAYER_KEYS, METRIC_KEYS, LayerStat, Run, RunMetric

Columns = dict[str, np.ndarray]


def _table(rows: Sequence[tuple], width: int) -> np.ndarray:
    """Rows of numbers/None → a (width, n) float array with NaN for None."""
    if not rows:
        return np.empty((width, 0))
    # Contiguous rows: each series is then a contiguous 1-d array (orjson needs that).
    return np.ascontiguousarray(np.array(rows, dtype=np.float64).T)


def _columns(step: np.ndarray, values: np.ndarray, keys: Sequence[str],
             max_points: int | None) -> Columns:
    if max_points is not None and step.size > max_points:
        keep = bucket_indices(values, max_points)
        step, values = step[keep], values[:, keep]
    out: Columns = {"step": step.astype(np.int64)}
    out.update((k, np.ascontiguousarray(v)) for k, v in zip(keys, values))
    return out


def parse_keys(keys: Sequence[str] | None) -> list[str]:
    """`?keys=a,b&keys=c` → ["a", "b", "c"], every one a metric key; all keys when empty."""
    wanted = [k.strip() for item in keys or [] for k in item.split(",") if k.strip()]
    unknown = [k for k in wanted if k not in METRIC_KEYS and k != "step"]
    if unknown:
        raise FieldError("keys", f"unknown metric keys {unknown}; known: {list(METRIC_KEYS)}")
    return [k for k in dict.fromkeys(wanted) if k != "step"] or list(METRIC_KEYS)


def read_metrics(*, session: Session, run_id: int, keys: Sequence[str] | None = None,
                 max_points: int | None = None) -> tuple[Columns, int]:
    """Run-level series {"step", *keys} and the number of stored points."""
    keys = parse_keys(keys)
    cols = [RunMetric.step, *(getattr(RunMetric, k) for k in keys)]
    rows = session.execute(select(*cols).where(RunMetric.run_id == run_id)
                           .order_by(RunMetric.step)).all()
    table = _table(rows, len(cols))
    return _columns(table[0], table[1:], keys, max_points), table.shape[1]


def layer_name(run: Run, index: int) -> str:
    names = run.layer_names or []
    return names[index] if 0 <= index < len(names) else f"layer{index}"


def read_layers(*, session: Session, run: Run, max_points: int | None = None
                ) -> tuple[list[tuple[int, str, int, Columns]], int]:
    """Per BN layer (index, name, stored points, columns) and the most stored points of a layer."""
    cols = [LayerStat.layer, LayerStat.step, *(getattr(LayerStat, k) for k in LAYER_KEYS)]
    rows = session.execute(select(*cols).where(LayerStat.run_id == run.id)
                           .order_by(LayerStat.layer, LayerStat.step)).all()
    table = _table(rows, len(cols))
    layers, raw = [], 0
    # Rows are sorted by layer, so each layer is one contiguous slice.
    bounds = np.flatnonzero(np.diff(table[0])) + 1 if table.shape[1] else np.array([], dtype=int)
    for part in np.split(table, bounds, axis=1) if table.shape[1] else []:
        index = int(part[0, 0])
        layers.append((index, layer_name(run, index), part.shape[1],
                       _columns(part[1], part[2:], LAYER_KEYS, max_points)))
        raw = max(raw, part.shape[1])
    return layers, raw
