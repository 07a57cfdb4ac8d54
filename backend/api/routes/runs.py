"""Runs: submit, list, read, cancel, retry, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from backend.api.deps import MAX_ID, RunDep, SessionDep, TokenDep
from backend.api.errors import responses
from backend.api.series_cache import cache as series_cache
from backend.crud import run_list
from backend.crud import runs as crud
from backend.db.models import Run
from bnlab.core.errors import FieldError
from bnlab.core.registry import RUN_STATUSES, RunKind
from bnlab.core.schema.run_list import BulkAction, BulkResult, BulkSkip, RunGroupsPublic
from bnlab.core.schema.runs import RunCreate, RunPublic, RunsPublic

router = APIRouter(prefix="/runs", tags=["runs"], responses=responses(401, 404, 409))
NoNul = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL


def parse_status(values: list[str] | None) -> list[str]:
    """`?status=queued,running&status=failed` → the statuses, each a known one."""
    wanted = [s.strip() for v in values or [] for s in v.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in RUN_STATUSES]
    if unknown:
        raise FieldError(
            "status", f"unknown status {unknown}; known: {list(RUN_STATUSES)}", "query"
        )
    return wanted


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=RunPublic, dependencies=[TokenDep]
)
def create_run(session: SessionDep, config: RunCreate) -> Run:
    """Submit one ExperimentConfig; the run starts `queued`."""
    return crud.create_run(session=session, config=config)


def parse_ids(values: list[str] | None) -> list[int] | None:
    """`?ids=3,1&ids=2` → [3, 1, 2]; None when not given."""
    if not values:
        return None
    items = [v.strip() for item in values for v in item.split(",") if v.strip()]
    # isascii: str.isdigit also accepts "²", which int() refuses (schemathesis found it)
    bad = [v for v in items if not (v.isascii() and v.isdigit()) or not 1 <= int(v) <= MAX_ID]
    if bad:
        raise FieldError("ids", f"not run ids: {bad[:5]}", "query")
    if len(items) > 10_000:
        raise FieldError("ids", f"at most 10000 ids, got {len(items)}", "query")
    return [int(v) for v in items]


StatusQuery = Annotated[
    list[str] | None, Query(description="one or more of " + ", ".join(RUN_STATUSES))
]
SweepQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]
TagQuery = Annotated[str | None, Query(max_length=64, pattern=NoNul, description="one exact tag")]
TextQuery = Annotated[str | None, Query(max_length=200, pattern=NoNul, description="in the name")]
SearchQuery = Annotated[
    str | None,
    Query(max_length=200, pattern=NoNul, description="substring of the name or of any tag"),
]
IdsQuery = Annotated[list[str] | None, Query(description="comma-separated run ids")]
KindQuery = Annotated[
    RunKind | None,
    Query(
        description="engine: configs a bnlab worker trained; script: the SDK in a user's own loop"
    ),
]


def _where(status, sweep, tag, text, q, ids) -> list:
    return run_list.filters(
        status=parse_status(status), sweep_id=sweep, tag=tag, text=text, q=q, ids=parse_ids(ids)
    )


@router.get("", response_model=RunsPublic)
def read_runs(
    session: SessionDep,
    status: StatusQuery = None,
    sweep: SweepQuery = None,
    tag: TagQuery = None,
    text: TextQuery = None,
    q: SearchQuery = None,
    ids: IdsQuery = None,
    kind: KindQuery = None,
    sort: Annotated[
        str | None,
        Query(
            max_length=200,
            pattern=NoNul,
            description=(
                "a column ("
                + ", ".join(run_list.SORT_COLUMNS)
                + ") or a path such as config.train.lr or "
                "summary.test_acc_eval; a leading - sorts descending (default -id: newest first)"
            ),
        ),
    ] = None,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    lean: Annotated[
        bool,
        Query(
            description=(
                "drop the summary's per-channel and per-layer arrays and the layer names (a deep "
                "net's run carries thousands of numbers and names there; a table of runs shows "
                "none of them): at most 8 KiB of summary per run, layer_names null"
            )
        ),
    ] = False,
) -> Response:
    """Runs matching every filter, sorted (missing values last), paginated."""
    where = _where(status, sweep, tag, text, q, ids)
    if kind is not None:
        where.append(Run.kind == kind)
    runs, count = run_list.read_page(
        session=session, where=where, sort=run_list.parse_sort(sort), offset=offset, limit=limit
    )
    data = [RunPublic.model_validate(r) for r in runs]
    if lean:
        for run in data:
            run.summary = run_list.lean_summary(run.summary)
            run.layer_names = None  # 4,096 names of 200 characters would be 800 kB a run
    # Serialised once here: returning the model made FastAPI dump it to dicts, validate those
    # again against response_model and dump them a second time (~12 of the ~20 ms of CPU per
    # page of 100 runs). The body is the same; response_model still documents it.
    return Response(
        RunsPublic(data=data, count=count).model_dump_json(), media_type="application/json"
    )


@router.get("/groups", response_model=RunGroupsPublic)
def read_groups(
    session: SessionDep,
    group_by: Annotated[
        str,
        Query(
            max_length=200, pattern=NoNul, description="a config path (config.model.dropout.rate)"
        ),
    ],
    metrics: Annotated[
        list[str] | None, Query(description="comma-separated summary/config paths")
    ] = None,
    status: StatusQuery = None,
    sweep: SweepQuery = None,
    tag: TagQuery = None,
    text: TextQuery = None,
    q: SearchQuery = None,
) -> RunGroupsPublic:
    """The filtered runs grouped by one value: per group n, the run ids and mean/sd/min/max of
    each metric (over the runs that have it)."""
    wanted = [m.strip() for item in metrics or [] for m in item.split(",") if m.strip()][:20]
    where = _where(status, sweep, tag, text, q, None)
    groups, count = run_list.group_runs(session=session, where=where, by=group_by, metrics=wanted)
    return RunGroupsPublic.model_validate({"groups": groups, "count": count})


@router.post("/bulk", response_model=BulkResult, dependencies=[TokenDep])
def bulk(session: SessionDep, body: BulkAction) -> BulkResult:
    """Tag, untag or delete many runs. Runs that do not exist, and (for delete) runs still
    queued or running, are skipped and listed with the reason; the others are done."""
    found = {r.id: r for r in crud.get_runs(session=session, run_ids=body.ids)}
    skipped = [
        BulkSkip(id=i, reason="not found") for i in dict.fromkeys(body.ids) if i not in found
    ]
    if body.action == "delete":
        done = []
        for run in found.values():
            if not run_list.deletable(run):
                skipped.append(BulkSkip(id=run.id, reason=f"{run.status}; cancel it first"))
                continue
            run_id = run.id
            crud.delete_run(session=session, run=run)
            series_cache.drop_run(run_id)
            done.append(run_id)
        return BulkResult(action=body.action, done=done, skipped=skipped)
    tags = body.tag_list()
    if not tags:
        raise FieldError("tags", "give at least one non-empty tag")
    add, remove = (tags, []) if body.action == "tag" else ([], tags)
    done = run_list.bulk_tag(session=session, ids=list(found), add=add, remove=remove)
    return BulkResult(action=body.action, done=done, skipped=skipped)


@router.get("/{run_id}", response_model=RunPublic)
def read_run(run: RunDep) -> Run:
    """One run: config, status, timestamps, device, progress, attempt, error, summary."""
    return run


@router.post("/{run_id}/cancel", response_model=RunPublic, dependencies=[TokenDep])
def cancel_run(session: SessionDep, run: RunDep) -> Run:
    """Queued: cancelled at once. Running: stops within one probe interval."""
    return crud.request_cancel(session=session, run=run)


@router.post(
    "/{run_id}/retry",
    status_code=status.HTTP_201_CREATED,
    response_model=RunPublic,
    dependencies=[TokenDep],
)
def retry_run(session: SessionDep, run: RunDep) -> Run:
    """A new run with the same config."""
    return crud.retry_run(session=session, run=run)


@router.delete("/{run_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[TokenDep])
def delete_run(session: SessionDep, run: RunDep) -> Response:
    """Remove an ended run, its series and its exports (409 while it is queued or running)."""
    run_id = run.id
    crud.delete_run(session=session, run=run)
    series_cache.drop_run(run_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
