"""One Settings object for the API and the worker, read from DISTILLERY_* environment variables.

With nothing set, everything lives under `DISTILLERY_HOME` (default `./.distillery`): a SQLite
database, a serverless Celery broker (kombu's SQLAlchemy transport on its own SQLite file) and a
local artifact directory. Setting `DISTILLERY_DATABASE_URL=postgresql+psycopg://...` and
`DISTILLERY_BROKER_URL=redis://...` moves to PostgreSQL and Redis with no code change.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTILLERY_", extra="ignore")

    home: Path = Field(default=Path(".distillery"), description="Root of the embedded default")
    database_url: str | None = None
    broker_url: str | None = None
    artifact_dir: Path | None = None
    # Celery queue the API sends jobs to and workers consume; tests use their own per run.
    task_queue: str = "distillery"
    max_upload_bytes: int = 512 * 1024 * 1024
    # Off only for the embedded single-user default: then every caller sees everything, and the
    # startup log and /healthz say so. Keys are made with `distillery keys create`.
    auth_enabled: bool = False
    # Server-side folders whose tables may be registered by path (POST /v1/datasets/from-path);
    # empty turns that route off. JSON list in the environment: '["/data/shared"]'.
    allowed_data_roots: list[Path] = Field(default_factory=list)
    # Loaded models kept in memory by the predict endpoint.
    model_cache_size: int = 4

    # Job lifecycle (worker and reaper).
    max_attempts: int = 3
    heartbeat_seconds: float = 10.0
    # A running job whose heartbeat is older than this lost its worker.
    heartbeat_timeout_seconds: float = 120.0
    reaper_interval_seconds: float = 30.0
    # A queued job not claimed for this long has its message sent again (Redis without
    # persistence loses messages on restart); a duplicate is harmless, claims are atomic.
    requeue_after_seconds: float = 600.0
    # Hard limit on one attempt; the soft limit a minute earlier ends it as failed/timeout.
    job_time_limit_seconds: int = 24 * 3600
    checkpoint_every_steps: int = 200

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'distillery.db').resolve()}"

    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.home / 'broker.db').resolve()}"

    def resolved_artifact_dir(self) -> Path:
        return (self.artifact_dir or self.home / "artifacts").resolve()

    def ensure_local_dirs(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.resolved_artifact_dir().mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
