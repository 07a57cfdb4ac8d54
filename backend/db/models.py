"""Tables. The database is the source of truth for every run; the broker is only transport."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from bnlab.core.registry import (  # noqa: F401  (re-exported: one definition, the registry)
    LAYER_KEYS,
    METRIC_KEYS,
    RUN_KINDS,
    RUN_STATUSES,
    TERMINAL_STATUSES,
)

# Stable constraint names, so Alembic migrations diff cleanly on PostgreSQL and SQLite.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# JSONB on PostgreSQL (migration 0009): the runs table sorts by paths inside these documents,
# and a `json` column is re-parsed whole for every path read.
SortableJSON = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timestamp that always comes back timezone-aware, in UTC, on every backend.

    PostgreSQL's timestamptz keeps the offset; SQLite stores text without one and returned
    naive datetimes, which the API sent without an offset (not RFC 3339, and browsers read
    them as local time). Values are stored as UTC and read back tagged with UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        elif value is not None:
            value = value.replace(tzinfo=UTC)  # naive values in this code base are UTC
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Sweep(Base):
    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    base: Mapped[dict[str, Any]] = mapped_column(JSON)  # the base ExperimentConfig
    grid: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"model.dropout.rate": [0.1, 0.5], ...}
    seeds: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    runs: Mapped[list[Run]] = relationship(back_populates="sweep")


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    config: Mapped[dict[str, Any]] = mapped_column(SortableJSON)  # validated ExperimentConfig
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    sweep_id: Mapped[int | None] = mapped_column(
        ForeignKey("sweeps.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # last send_task
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(200))  # worker id holding the run
    host: Mapped[str | None] = mapped_column(String(200))
    device: Mapped[str | None] = mapped_column(String(200))
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # 0..1 of the planned steps
    step: Mapped[int] = mapped_column(Integer, default=0)  # last probed optimizer step
    # A script run's planned steps (bnlab.init(total_steps=)), for its progress; NULL for engine
    # runs and scripts that did not say (migration 0011)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # 1 on the first claim, +1 per retry
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    layer_names: Mapped[list[str] | None] = mapped_column(JSON)  # BN layer names, by index
    summary: Mapped[dict[str, Any] | None] = mapped_column(SortableJSON)
    kind: Mapped[str] = mapped_column(
        String(16), index=True, default="engine", server_default="engine"
    )  # RUN_KINDS (migration 0006)

    sweep: Mapped[Sweep | None] = relationship(back_populates="runs")

    def __init__(self, **kwargs: Any) -> None:
        # A column default applies only at INSERT; without this an unsaved Run (built by a
        # caller or a test) read kind=None, which no API schema accepts.
        kwargs.setdefault("kind", "engine")
        super().__init__(**kwargs)


class RunMetric(Base):
    """Run-level values of one probe step (wide rows: the API serves them columnar)."""

    __tablename__ = "run_metrics"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[float | None] = mapped_column(Float)
    train_loss: Mapped[float | None] = mapped_column(Float)
    train_acc: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    val_acc: Mapped[float | None] = mapped_column(Float)
    val_acc_train_mode: Mapped[float | None] = mapped_column(Float)
    lr: Mapped[float | None] = mapped_column(Float)
    grad_cos: Mapped[float | None] = mapped_column(Float)  # probe.grad_noise only (migration 0004)
    wall_time: Mapped[float | None] = mapped_column(Float)  # UNIX seconds (migration 0010)


class LayerStat(Base):
    """One BN layer's statistics at one probe step (docs/science.md §1)."""

    __tablename__ = "layer_stats"

    # No foreign key (migration 0003): the per-row check halved COPY speed into this table;
    # crud.delete_run removes a run's points explicitly.
    run_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    layer: Mapped[int] = mapped_column(Integer, primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    train_mean: Mapped[float | None] = mapped_column(Float)
    train_var: Mapped[float | None] = mapped_column(Float)
    running_mean: Mapped[float | None] = mapped_column(Float)
    running_var: Mapped[float | None] = mapped_column(Float)
    eval_mean: Mapped[float | None] = mapped_column(Float)
    eval_var: Mapped[float | None] = mapped_column(Float)
    shift: Mapped[float | None] = mapped_column(Float)
    grad_norm: Mapped[float | None] = mapped_column(Float)
    # Li et al.'s statistic, the noise floors and the log-ratio quartiles (migration 0008)
    shift_li: Mapped[float | None] = mapped_column(Float)
    shift_floor: Mapped[float | None] = mapped_column(Float)
    shift_li_floor: Mapped[float | None] = mapped_column(Float)
    shift_log_q1: Mapped[float | None] = mapped_column(Float)
    shift_log_median: Mapped[float | None] = mapped_column(Float)
    shift_log_q3: Mapped[float | None] = mapped_column(Float)


class SeriesPack(Base):
    """One series of an ended run, packed: float64 little-endian values in stored order.

    A read cache kept in the database (crud/packs.py, migration 0005): reading 8 layers x 1000
    steps row by row costs PostgreSQL ~15 ms, one packed value per key well under 1 ms. Valid
    while `signature` equals the run row's (status, step, attempt, finish time); rebuilt otherwise.
    """

    __tablename__ = "series_packs"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # "metrics" or "layers"
    key: Mapped[str] = mapped_column(String(32), primary_key=True)  # "step", "layer" or a value key
    signature: Mapped[str] = mapped_column(String(200))
    data: Mapped[bytes] = mapped_column(LargeBinary)


# METRIC_KEYS / LAYER_KEYS (the registry) name these tables' value columns; a drift test checks
# the columns above match them.


class ScriptKey(Base):
    """A secret a script client holds for its run (migration 0006), stored as its SHA-256.

    The SDK makes the secret; creating a run with a key already known returns that run (so a
    spool synced twice makes one run), and ingest into a run needs one of its keys (a client
    cannot write into another run). A resume adds a key; earlier ones stay valid, so the
    spool of the first process can still be synced.
    """

    __tablename__ = "script_keys"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ExtraMetric(Base):
    """A script run's scalar metric with a name outside METRIC_KEYS (`run.step(my_metric=x)`),
    one row per (run, key, step); migration 0006."""

    __tablename__ = "extra_metrics"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[float | None] = mapped_column(Float)


class Upload(Base):
    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(1024))  # under settings.uploads_dir
    size_bytes: Mapped[int] = mapped_column(Integer)
    n_rows: Mapped[int] = mapped_column(Integer)
    n_features: Mapped[int] = mapped_column(Integer)
    n_classes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Worker(Base):
    """A live Celery worker process. With the filesystem transport remote control does not work,
    so liveness comes from this table: each worker touches `last_seen` from a background thread."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # host:pid:random
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    # {"visible_devices", "cuda_available", "gpu_name", "driver", "torch_cuda", "error"}: what
    # the process trains on, as it found it at start (migration 0007; shown in /api/health).
    device: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
