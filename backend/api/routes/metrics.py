"""A run's series, columnar, optionally downsampled by min/max buckets (`?max_points=`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from backend.api.deps import RunDep, SessionDep
from backend.api.errors import responses
from backend.api.series import RAW_HEADER, layers_builder, metrics_builder
from backend.api.series_cache import serve_series
from backend.crud import metrics as crud
from backend.crud.downsample import MIN_POINTS
from bnlab.core.errors import FieldError
from bnlab.core.registry import LAYER_KEYS, METRIC_KEYS
from bnlab.core.schema.metrics import (
    MAX_LAYER_VALUES,
    MAX_LAYERS_PER_READ,
    LayersPublic,
    MetricsPublic,
)

router = APIRouter(prefix="/runs", tags=["metrics"], responses=responses(404))
MaxPoints = Annotated[
    int | None,
    Query(ge=MIN_POINTS, le=1_000_000, description="downsample to at most this many points"),
]


def keys_pattern(known: tuple[str, ...]) -> str:
    """The grammar of a `?keys=` value, stated in the schema: comma-separated known keys."""
    alt = "|".join(("step", *known))
    return rf"^ *({alt})( *, *({alt}))* *$"


KeysQuery = Annotated[
    list[Annotated[str, Query(pattern=keys_pattern(METRIC_KEYS))]] | None,
    Query(description="comma-separated subset of " + ", ".join(METRIC_KEYS)),
]
StepMin = Annotated[
    int | None,
    Query(ge=0, le=2**31 - 1, description="only points at steps >= this (a zoomed chart)"),
]
StepMax = Annotated[
    int | None, Query(ge=0, le=2**31 - 1, description="only points at steps <= this")
]


def window(step_min: int | None, step_max: int | None) -> tuple[int | None, int | None]:
    """The step window, checked: a 422 naming step_max when it lies below step_min."""
    if step_min is not None and step_max is not None and step_max < step_min:
        raise FieldError("step_max", f"{step_max} is below step_min {step_min}", "query")
    return step_min, step_max


LayerKeysQuery = Annotated[
    list[Annotated[str, Query(pattern=keys_pattern(LAYER_KEYS))]] | None,
    Query(description="comma-separated subset of " + ", ".join(LAYER_KEYS)),
]
# Layer indices and ranges: "0-3,7". The count cap is checked by crud.parse_layers (a 422
# naming `layers`); the grammar is stated here so schema-driven clients send what parses.
LAYER_SPAN = r"[0-9]{1,10}(-[0-9]{1,10})?"
LayersQuery = Annotated[
    list[Annotated[str, Query(pattern=rf"^ *{LAYER_SPAN}( *, *{LAYER_SPAN})* *$")]] | None,
    Query(
        description=(
            "the BN layers to read, by index: comma-separated indices and ranges (0-3,7), at "
            f"most {MAX_LAYERS_PER_READ}; default the first ones that fit. An answer holds at "
            f"most {MAX_LAYER_VALUES:,} values (layers x points x columns, shared by the runs "
            "of a compare answer): layers are downsampled to fit, and `truncated` says when "
            "layers were left out"
        )
    ),
]


@router.get(
    "/{run_id}/metrics",
    response_model=MetricsPublic,
    responses={200: {"headers": {RAW_HEADER: {"schema": {"type": "integer"}}}}},
)
def read_metrics(
    request: Request,
    session: SessionDep,
    run: RunDep,
    keys: KeysQuery = None,
    max_points: MaxPoints = None,
    step_min: StepMin = None,
    step_max: StepMax = None,
) -> Response:
    """Run-level series: {"step": [...], "<key>": [...]}; X-Raw-Points has the stored count."""
    wanted = tuple(crud.parse_keys(keys))  # validated before anything is cached
    win = window(step_min, step_max)
    return serve_series(
        request,
        run,
        "metrics",
        (wanted, max_points, *win),
        metrics_builder(session, wanted, max_points, win),
    )


@router.get("/{run_id}/layers", response_model=LayersPublic)
def read_layers(
    request: Request,
    session: SessionDep,
    run: RunDep,
    keys: LayerKeysQuery = None,
    max_points: MaxPoints = None,
    step_min: StepMin = None,
    step_max: StepMax = None,
    layers: LayersQuery = None,
) -> Response:
    """Per-BN-layer series, columnar per layer; `raw_points` has the stored count. Bounded in
    the run's layer count: `layers` picks them (see its description for the caps)."""
    wanted = tuple(crud.parse_keys(keys, LAYER_KEYS))  # validated before anything is cached
    chosen = crud.parse_layers(layers)
    win = window(step_min, step_max)
    return serve_series(
        request,
        run,
        "layers",
        (wanted, max_points, *win, chosen, MAX_LAYER_VALUES),
        layers_builder(session, wanted, max_points, win, chosen, MAX_LAYER_VALUES),
    )
