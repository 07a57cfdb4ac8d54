"""The one settings object: every knob comes from the environment (prefix BNLAB_)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import Field, computed_field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

# Where each supervised worker process writes its health file: the container healthcheck
# (worker/healthcheck.py) reads them with nothing heavier than this module, no database, no torch.
HEALTH_DIR = Path(tempfile.gettempdir()) / "bnlab-worker-health"


class Settings(BaseSettings):
    # env_ignore_empty: compose passes every BNLAB_ setting as `${BNLAB_X:-}`, so an unset one
    # arrives as "" and must mean "the default", not an invalid value.
    model_config = SettingsConfigDict(
        env_prefix="BNLAB_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    data_dir: Path = Path.home() / ".bnlab"  # SQLite file, embedded broker, checkpoints, uploads
    # default: SQLite in data_dir
    database_url_: str | None = Field(None, alias="BNLAB_DATABASE_URL")
    # default: embedded (kombu's filesystem transport in data_dir)
    broker_url_: str | None = Field(None, alias="BNLAB_BROKER_URL")
    datasets_dir_: Path | None = Field(None, alias="BNLAB_DATASETS_DIR")  # root for dataset.path
    api_token: str | None = None  # when set, every write needs `Authorization: Bearer <token>`
    # With api_token: every read under /api needs the token too (configs, series, exports, the
    # event stream); /api/health stays open. backend/api/auth.py. On in docker-compose.yml.
    auth_reads: bool = False
    max_epochs: int = 200  # cap on train.epochs for a submission
    max_params: int = 50_000_000  # cap on a model's parameter count
    max_sweep_runs: int = 200  # cap on the number of runs one sweep expands to
    max_upload_mb: int = 200  # cap on an uploaded dataset file
    max_attempts: int = 3  # automatic retries of a run whose worker died
    heartbeat_s: float = 5.0  # a running worker touches its run this often
    heartbeat_timeout_s: float = 30.0  # a run whose heartbeat is older is considered lost
    # A script run (the SDK in a user's loop) silent this long ends `crashed`; longer than a
    # worker's: a user's loop may sit in a long evaluation or a slow data loader.
    script_timeout_s: float = 120.0
    reconcile_s: float = 15.0  # how often the reaper/reconciler sweeps the runs table
    cors_origins: list[str] = []
    # A run whose training makes no progress (no probe, no epoch end) for this long, while its
    # heartbeat thread still beats, is treated like a lost one (worker/db_sink.py). 0 = off.
    stall_timeout_s: float = 900.0
    # Redis redelivers an unacknowledged message after this long (acks_late: a message is acked
    # when its run ends). Longer than any run, so a healthy long run is never sent twice; a run
    # whose worker died is requeued by the reconciler long before, from the database.
    visibility_timeout_s: float = 172_800.0
    # Where checkpoints, exports and uploads go: unset = the data dir (one host or a shared
    # volume); s3://bucket/prefix = an S3-compatible object store (workers on other hosts).
    artifacts_url: str | None = None
    s3_endpoint_url: str | None = None  # e.g. http://minio:9000; unset = AWS
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"
    # /api/health says "degraded" when the data dir's disk (checkpoints, uploads, exports, the
    # SQLite file, the embedded broker) or the SQLite file's own disk has less free space than
    # this: a full disk stalls runs at their next checkpoint long before anything fails loudly.
    min_free_mb: int = Field(1024, ge=0)
    # Stopping `bnlab serve` / `bnlab worker` (SIGTERM, SIGINT): a busy worker stops training at
    # its next probe and gives its run back to the queue; one still busy after this long is
    # killed and its run given back by the supervisor. Either way no attempt is spent and the
    # run resumes from its last epoch checkpoint. Keep it below the orchestrator's own grace
    # (docker's stop_grace_period, systemd's TimeoutStopSec, Slurm's KillWait).
    stop_grace_s: float = Field(20.0, ge=0)
    # Set by `bnlab worker --gpus ...` for its children: a worker pinned to a GPU whose CUDA
    # cannot start takes no run (it would silently train on the CPU) and says why.
    require_cuda: bool = False
    # PostgreSQL connections of one process (docs/operations.md, "Connection budget"): the pool
    # keeps up to db_pool_size open and opens at most db_max_overflow more under load (closed
    # again when returned); a request past both waits db_pool_timeout_s for a free one. A
    # worker process needs 2 (compose sets 2 and 0 for the worker service); the API's default
    # of 5 + 5 serves its request threads. SQLite ignores them.
    db_pool_size: int = Field(5, ge=1)
    db_max_overflow: int = Field(5, ge=0)
    db_pool_timeout_s: float = Field(30.0, gt=0)
    # libpq's connect_timeout: an unreachable server fails a connection attempt in this long
    # instead of the OS's minutes, so a pool slot is never held by a hung connect.
    db_connect_timeout_s: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _reads_need_a_token(self) -> Settings:
        # Reads locked with no token to unlock them would be a server nobody can use.
        if self.auth_reads and not self.api_token:
            raise ValueError("BNLAB_AUTH_READS needs BNLAB_API_TOKEN (the token reads will need)")
        return self

    @computed_field
    @property
    def database_url(self) -> str:
        return self.database_url_ or f"sqlite:///{self.data_dir / 'bnlab.db'}"

    @property
    def database_location(self) -> str:
        """The database as a log line may name it (never its password): the SQLite file, or
        the database and its host."""
        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite":
            return f"the SQLite file {Path(url.database or '').resolve()}"
        return f"the database {url.database} on {url.host}:{url.port or 5432}"

    @computed_field
    @property
    def broker_url(self) -> str:
        return self.broker_url_ or "filesystem://"

    @computed_field
    @property
    def datasets_dir(self) -> Path:
        return self.datasets_dir_ or self.data_dir / "datasets"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def checkpoints_dir(self) -> Path:
        return self.data_dir / "checkpoints"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def exports_dir(self) -> Path:
        return self.data_dir / "exports"


settings = Settings()
