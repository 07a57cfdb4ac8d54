"""Upload schemas: what POST /api/datasets answers."""

from __future__ import annotations

from pydantic import BaseModel


class UploadPublic(BaseModel):
    upload_id: str  # use as dataset.upload_id with dataset.name = "upload"
    n_rows: int
    n_features: int
    n_classes: int
