"""A run's series, columnar, optionally downsampled by min/max buckets (`?max_points=`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from backend.api.deps import RunDep, SessionDep
from backend.api.encode import SeriesResponse
from backend.api.errors import responses
from backend.crud import metrics as crud
from backend.crud.downsample import MIN_POINTS
from backend.db.models import METRIC_KEYS
from backend.schema.metrics import LayersPublic, MetricsPublic

router = APIRouter(prefix="/runs", tags=["metrics"], responses=responses(404))
MaxPoints = Annotated[int | None, Query(ge=MIN_POINTS, le=1_000_000,
                                        description="downsample to at most this many points")]
RAW_HEADER = "X-Raw-Points"  # stored points before downsampling


@router.get("/{run_id}/metrics", response_model=MetricsPublic,
            responses={200: {"headers": {RAW_HEADER: {"schema": {"type": "integer"}}}}})
def read_metrics(session: SessionDep, run: RunDep,
                 keys: Annotated[list[str] | None, Query(description="comma-separated subset of "
                                                         + ", ".join(METRIC_KEYS))] = None,
                 max_points: MaxPoints = None) -> SeriesResponse:
    """Run-level series: {"step": [...], "<key>": [...]}; X-Raw-Points has the stored count."""
    columns, raw = crud.read_metrics(session=session, run_id=run.id, keys=keys, max_points=max_points)
    return SeriesResponse(columns, headers={RAW_HEADER: str(raw)})


@router.get("/{run_id}/layers", response_model=LayersPublic)
def read_layers(session: SessionDep, run: RunDep, max_points: MaxPoints = None) -> SeriesResponse:
    """Per-BN-layer series, columnar per layer."""
    layers, raw = crud.read_layers(session=session, run=run, max_points=max_points)
    body = {"layers": [{"index": i, "name": name, "raw_points": n, **cols}
                       for i, name, n, cols in layers], "raw_points": raw}
    return SeriesResponse(body, headers={RAW_HEADER: str(raw)})
