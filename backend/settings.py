"""The one settings object: every knob comes from the environment (prefix BNLAB_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, computed_field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BNLAB_", env_file=".env", extra="ignore")

    data_dir: Path = Path.home() / ".bnlab"  # SQLite file, embedded broker, checkpoints, uploads
    database_url_: str | None = Field(None, alias="BNLAB_DATABASE_URL")  # default: SQLite in data_dir
    broker_url_: str | None = Field(None, alias="BNLAB_BROKER_URL")  # default: embedded (filesystem)
    datasets_dir_: Path | None = Field(None, alias="BNLAB_DATASETS_DIR")  # root for dataset.path
    api_token: str | None = None  # when set, every write needs `Authorization: Bearer <token>`
    max_epochs: int = 200  # cap on train.epochs for a submission
    max_params: int = 50_000_000  # cap on a model's parameter count
    max_sweep_runs: int = 200  # cap on the number of runs one sweep expands to
    max_upload_mb: int = 200  # cap on an uploaded dataset file
    max_attempts: int = 3  # automatic retries of a run whose worker died
    heartbeat_s: float = 5.0  # a running worker touches its run this often
    heartbeat_timeout_s: float = 30.0  # a run whose heartbeat is older is considered lost
    reconcile_s: float = 15.0  # how often the reaper/reconciler sweeps the runs table
    cors_origins: list[str] = []

    @computed_field
    @property
    def database_url(self) -> str:
        return self.database_url_ or f"sqlite:///{self.data_dir / 'bnlab.db'}"

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
