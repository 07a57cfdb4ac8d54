"""The bodies of GET /runs/{id}/metrics and /layers, built for several runs at once.

Shared by the per-run routes and GET /api/compare, so the batched answer holds, per run, exactly
what the per-run endpoints answer (and the same cache entries serve both).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from backend.crud import metrics as crud
from backend.db.models import Run

RAW_HEADER = "X-Raw-Points"  # stored points before downsampling


def metrics_builder(
    session: Session,
    keys: Sequence[str],
    max_points: int | None,
    window: crud.Window = (None, None),
):
    """build(runs) → {run id: (columns, headers)} for /metrics."""

    def build(runs: Sequence[Run]) -> dict[int, tuple[object, dict[str, str]]]:
        read = crud.read_metrics_many(
            session=session, runs=runs, keys=keys, max_points=max_points, window=window
        )
        return {i: (columns, {RAW_HEADER: str(raw)}) for i, (columns, raw) in read.items()}

    return build


def layers_builder(
    session: Session,
    keys: Sequence[str],
    max_points: int | None,
    window: crud.Window = (None, None),
    layers: tuple[int, ...] | None = None,
    budget: int = crud.MAX_LAYER_VALUES,
):
    """build(runs) → {run id: ({"layers": [...], "raw_points", ...}, headers)} for /layers:
    the `layers` asked (or the first ones) within `budget` values per run (crud.plan_layers)."""

    def build(runs: Sequence[Run]) -> dict[int, tuple[object, dict[str, str]]]:
        read = crud.read_layers_many(
            session=session,
            runs=runs,
            keys=keys,
            max_points=max_points,
            window=window,
            layers=layers,
            budget=budget,
        )
        return {
            i: (
                {
                    "layers": [
                        {"index": index, "name": name, "raw_points": n, **cols}
                        for index, name, n, cols in series
                    ],
                    "raw_points": raw,
                    "layers_total": plan.total,
                    "truncated": plan.truncated,
                    "max_points": plan.max_points,
                },
                {RAW_HEADER: str(raw)},
            )
            for i, (series, raw, plan) in read.items()
        }

    return build
