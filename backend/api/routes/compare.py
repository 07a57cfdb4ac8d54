"""GET /api/compare: several runs' rows, metrics and layers in one request.

A compare view of 20 runs used to cost 60 requests (~2.5 ms of fixed cost each) and 40 series
reads; here the series of all runs are read with one query per source and the answer reuses
the per-run endpoints' cached bodies, so it holds exactly what they would answer.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status

from backend.api.deps import MAX_ID, SessionDep
from backend.api.errors import FieldErrorsPublic
from backend.api.routes.metrics import (
    KeysQuery,
    LayerKeysQuery,
    LayersQuery,
    MaxPoints,
    StepMax,
    StepMin,
    window,
)
from backend.api.series import RAW_HEADER, layers_builder, metrics_builder
from backend.api.series_cache import Answer, encoded
from backend.crud import metrics as crud
from backend.crud.runs import get_runs
from backend.db.models import Run
from bnlab.core.errors import FieldError
from bnlab.core.registry import LAYER_KEYS, METRIC_KEYS
from bnlab.core.schema.compare import ComparePublic
from bnlab.core.schema.metrics import MAX_LAYER_VALUES
from bnlab.core.schema.runs import RunPublic

# Its 404 names the field like a 422 does (`input` lists the missing ids), not a plain detail.
NOT_FOUND = {
    404: {
        "model": FieldErrorsPublic,
        "description": "some runs do not exist; detail[0].input lists their ids",
    }
}
router = APIRouter(tags=["metrics"], responses=NOT_FOUND)
MAX_RUNS = 100  # a compare view of more is unreadable; the answer would pass 50 MB
# The grammar the server accepts, stated in the OpenAPI schema (so schema-driven clients send
# what passes): each value a comma-separated list of 1 to MAX_RUNS positive ids. An id past
# MAX_ID is no run (404), like /api/runs/{id}.
RUN_ID = r"0*[1-9][0-9]{0,9}"
RUNS_PATTERN = rf"^ *{RUN_ID}( *, *{RUN_ID}){{0,{MAX_RUNS - 1}}} *$"
RunsQuery = Annotated[
    list[Annotated[str, Query(pattern=RUNS_PATTERN)]],
    Query(min_length=1, description=f"comma-separated run ids (at most {MAX_RUNS} in all)"),
]


def parse_ids(values: list[str]) -> list[int]:
    """`?runs=3,1&runs=2` → [3, 1, 2]: each a run id, once, in the order given."""
    bad = [v for v in values if not re.fullmatch(RUNS_PATTERN, v)]
    if bad or not values:
        raise FieldError("runs", f"comma-separated run ids, got {bad[:5]}", "query")
    ids = list(dict.fromkeys(int(v) for item in values for v in item.split(",")))
    if len(ids) > MAX_RUNS:
        raise FieldError("runs", f"at most {MAX_RUNS} runs, got {len(ids)}", "query")
    return ids


def _not_found(missing: list[int]) -> HTTPException:
    # Shaped like a validation error so the field is named; `input` lists the ids the client
    # can drop before asking again (the dashboard shows the others and names the missing).
    msg = f"no run with id {', '.join(map(str, missing))}"
    return HTTPException(
        status.HTTP_404_NOT_FOUND,
        [
            {
                "loc": ["query", "runs"],
                "field": "runs",
                "msg": msg,
                "type": "not_found",
                "input": missing,
            }
        ],
    )


@router.get("/compare", response_model=ComparePublic)
def read_compare(
    session: SessionDep,
    runs: RunsQuery,
    layer_keys: LayerKeysQuery = None,
    metric_keys: KeysQuery = None,
    max_points: MaxPoints = None,
    step_min: StepMin = None,
    step_max: StepMax = None,
    layers: LayersQuery = None,
) -> Response:
    """Per run: the run, its metrics (+ their raw point count) and its layers, as the per-run
    endpoints answer them with the same `keys`, `max_points`, step window and `layers`, except
    that the layers' value cap is shared: each of n runs gets 1/n of it."""
    ids = parse_ids(runs)
    m_keys = tuple(crud.parse_keys(metric_keys, METRIC_KEYS, "metric_keys"))
    l_keys = tuple(crud.parse_keys(layer_keys, LAYER_KEYS, "layer_keys"))
    chosen = crud.parse_layers(layers)
    rows = get_runs(session=session, run_ids=[i for i in ids if i <= MAX_ID])
    if len(rows) < len(ids):
        found = {r.id for r in rows}
        raise _not_found([i for i in ids if i not in found])
    win = window(step_min, step_max)
    metrics = encoded(
        rows,
        "metrics",
        (m_keys, max_points, *win),
        metrics_builder(session, m_keys, max_points, win),
    )
    budget = MAX_LAYER_VALUES // len(rows)
    per_run_layers = encoded(
        rows,
        "layers",
        (l_keys, max_points, *win, chosen, budget),
        layers_builder(session, l_keys, max_points, win, chosen, budget),
    )
    body = _splice(rows, metrics, per_run_layers)
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


def _splice(rows: list[Run], metrics: dict[int, Answer], layers: dict[int, Answer]) -> bytes:
    """{"runs": [{"run", "metrics", "metrics_raw_points", "layers"}, ...]} from the encoded
    per-run bodies, spliced in as bytes: no decoding and re-encoding of megabytes of floats."""
    parts = [b'{"runs":[']
    for n, r in enumerate(rows):
        parts += [
            b',{"run":' if n else b'{"run":',
            RunPublic.model_validate(r).model_dump_json().encode(),
            b',"metrics":',
            metrics[r.id][0],
            b',"metrics_raw_points":',
            metrics[r.id][1][RAW_HEADER].encode(),
            b',"layers":',
            layers[r.id][0],
            b"}",
        ]
    parts.append(b"]}")
    return b"".join(parts)  # joined once: the parts are megabytes
