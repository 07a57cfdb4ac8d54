"""Submission checks beyond the schema: caps, dataset path, upload id, storable values.

They run before a run or sweep is stored, so a bad submission never reaches the queue.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy.orm import Session

from backend.db.models import Upload
from backend.settings import settings
from bnlab.core import registry
from bnlab.core.errors import FieldError
from bnlab.core.registry import WEIGHT_LAYER
from bnlab.core.schema.experiment import ExperimentConfig
from bnlab.core.schema.params import estimate_params
from bnlab.core.schema.paths import resolve_dataset_path
from bnlab.core.schema.splits import dataset_total, idx_train_samples, train_split_size


def check_storable(value: Any, path: str = "") -> None:
    """Refuse what the database or JSON cannot hold: NUL characters and non-finite numbers."""
    if isinstance(value, str) and "\x00" in value:
        raise FieldError(path or "config", "must not contain NUL characters")
    if isinstance(value, float) and not math.isfinite(value):
        raise FieldError(path or "config", "must be a finite number")
    if isinstance(value, dict):
        for key, item in value.items():
            check_storable(key, path or "config")
            check_storable(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for item in value:
            check_storable(item, path)


def _upload_spec(session: Session, cfg: ExperimentConfig) -> tuple[tuple[int, ...], int] | None:
    if cfg.dataset.name != "upload":
        return None
    upload = session.get(Upload, cfg.dataset.upload_id)
    if upload is None:
        raise FieldError("dataset.upload_id", f"no uploaded dataset '{cfg.dataset.upload_id}'")
    return (upload.n_features,), upload.n_classes


def check_batch_fits(*, session: Session, config: ExperimentConfig) -> None:
    """train.batch_size must not exceed the training split (when its size is known here)."""
    ds = config.dataset
    rows = None
    if ds.name == "upload":
        upload = session.get(Upload, ds.upload_id)
        rows = upload.n_rows if upload is not None else None
    spec = registry.dataset(ds.name)
    total = dataset_total(ds.name, ds.n_samples, rows)
    if total is None and spec.source == "idx" and ds.path:  # the label file's header says
        total = idx_train_samples(resolve_dataset_path(settings.datasets_dir, ds.path))
    own_test, bound = spec.own_test_split, ""
    if total is None and ds.limit:
        # The split grows with the files' size and stops at dataset.limit: the split of `limit`
        # samples (no test split taken first) bounds it from above; a batch above never fits.
        total, own_test, bound = ds.limit, True, "at most "
    if total is None:
        return  # sized by files read only in full (CIFAR pickles): the engine checks on load
    n_train = train_split_size(
        total, own_test_split=own_test, val_fraction=ds.val_fraction, limit=ds.limit
    )
    if config.train.batch_size > n_train:
        raise FieldError(
            "train.batch_size",
            f"{config.train.batch_size} is larger than the "
            f"training split of dataset '{ds.name}' ({bound}{n_train} samples after the "
            "test and validation splits)",
        )


def check_submission(*, session: Session, config: ExperimentConfig) -> None:
    """Raise FieldError naming the field if `config` must not be queued."""
    check_storable(config.model_dump(mode="python"))
    if config.train.epochs > settings.max_epochs:
        raise FieldError(
            "train.epochs",
            f"{config.train.epochs} is above the cap of {settings.max_epochs} (BNLAB_MAX_EPOCHS)",
        )
    if config.dataset.path:
        try:
            resolve_dataset_path(settings.datasets_dir, config.dataset.path)
        except ValueError as exc:
            raise FieldError("dataset.path", str(exc)) from None
        except OSError as exc:  # e.g. a name too long: its message would hold the server's path
            raise FieldError(
                "dataset.path", f"cannot be opened ({exc.strerror or 'invalid'})"
            ) from None
    check_batch_fits(session=session, config=config)
    params = estimate_params(config, _upload_spec(session, config))
    if params > settings.max_params:
        # residual nets grow with depth (and widen / growth); mlp and cnn with widths
        field = "model.widths" if config.model.arch in WEIGHT_LAYER else "model.depth"
        raise FieldError(
            field,
            f"the model would have about {params:,} parameters, "
            f"above the cap of {settings.max_params:,} (BNLAB_MAX_PARAMS)",
        )
