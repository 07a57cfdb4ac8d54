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
):
    """build(runs) → {run id: ({"layers": [...], "raw_points"}, headers)} for /layers."""

    def build(runs: Sequence[Run]) -> dict[int, tuple[object, dict[str, str]]]:
        read = crud.read_layers_many(
            session=session, runs=runs, keys=keys, max_points=max_points, window=window
        )
        return {
            i: (
                {
                    "layers": [
                        {"index": index, "name": name, "raw_points": n, **cols}
                        for index, name, n, cols in layers
                    ],
                    "raw_points": raw,
                },
                {RAW_HEADER: str(raw)},
            )
            for i, (layers, raw) in read.items()
        }

    return build
