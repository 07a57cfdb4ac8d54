"""POST /api/describe: what a config builds (BN layers, dropout, parameters, cost), for the
submit form's live counts and for scripts; nothing is stored or queued."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from backend.api.deps import SessionDep
from backend.db.models import Upload
from bnlab.core.errors import FieldError
from bnlab.core.schema.describe import DescriptionPublic, describe
from bnlab.core.schema.experiment import ExperimentConfig

router = APIRouter(prefix="/describe", tags=["describe"])


@router.post("", response_model=DescriptionPublic)
def describe_config(config: ExperimentConfig, session: SessionDep) -> dict[str, Any]:
    """The network `config` builds: BN layers in forward order with their place and feed,
    dropouts, parameter count, and rough memory and time estimates (assumptions stated)."""
    upload_shape = None
    if config.dataset.name == "upload":
        upload = session.get(Upload, config.dataset.upload_id)
        if upload is None:
            raise FieldError(
                "dataset.upload_id", f"no uploaded dataset '{config.dataset.upload_id}'"
            )
        upload_shape = ((upload.n_features,), upload.n_classes)
    return describe(config, upload_shape)
