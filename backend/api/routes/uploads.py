"""Dataset uploads: .npz (X, y) or .csv (header; `label` or last column) → an upload_id."""

from __future__ import annotations

from fastapi import APIRouter, UploadFile, status

from backend.api.deps import SessionDep, TokenDep
from backend.api.errors import responses
from backend.crud import uploads as crud
from bnlab.core.schema.uploads import UploadPublic

router = APIRouter(prefix="/datasets", tags=["datasets"], responses=responses(401, 413))


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=UploadPublic, dependencies=[TokenDep]
)
def create_upload(session: SessionDep, file: UploadFile) -> UploadPublic:
    """Validate and store a dataset; use the id as `dataset.upload_id` with name `upload`."""
    row = crud.store_upload(session=session, filename=file.filename or "", stream=file.file)
    return UploadPublic(
        upload_id=row.id, n_rows=row.n_rows, n_features=row.n_features, n_classes=row.n_classes
    )
