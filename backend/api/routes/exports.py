"""Trained weights of a finished run (BN folded), written by the worker at the end of a run."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import FileResponse
from pydantic import BaseModel

from backend.api.deps import RunDep
from backend.api.errors import responses
from backend.artifacts import export_key, get_store

router = APIRouter(prefix="/runs", tags=["exports"], responses=responses(404))
MEDIA = {"npz": "application/octet-stream", "onnx": "application/octet-stream"}


def _missing(run_id: int, run_status: str, fmt: str) -> str:
    if run_status != "succeeded":
        return (
            f"run {run_id} has no export: it is {run_status}; "
            "exports are written when a run succeeds"
        )
    if fmt == "onnx":
        return (
            f"run {run_id} has no ONNX export (onnx was not installed on its worker); "
            "try format=npz"
        )
    return f"run {run_id} has no {fmt} export on this server"


class ExportsPublic(BaseModel):
    """The export files a run has on this server (the dashboard offers only these)."""

    formats: list[Literal["npz", "onnx"]]


@router.get("/{run_id}/exports", response_model=ExportsPublic)
def list_exports(run: RunDep) -> ExportsPublic:
    """Which of model.npz / model.onnx exist for the run (none until it succeeds)."""
    store = get_store()  # the data dir, or the object store a remote worker published to
    formats = [f for f in ("npz", "onnx") if store.exists(export_key(run.id, f))]
    return ExportsPublic(formats=formats)


@router.get(
    "/{run_id}/export",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def read_export(
    run: RunDep, format: Annotated[Literal["npz", "onnx"], Query()] = "npz"
) -> FileResponse:
    """model.npz (weights, BN folded) or model.onnx of a succeeded run."""
    # From the artifact store: a worker on another host published it there (an S3 object is
    # copied into this server's data dir first; on the embedded default it already is there).
    path = get_store().fetch(export_key(run.id, format))
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, _missing(run.id, run.status, format))
    return FileResponse(path, media_type=MEDIA[format], filename=f"bnlab-run-{run.id}.{format}")
