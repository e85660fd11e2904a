"""One Settings object for the API and the worker, read from DISTILLERY_* environment variables.

With nothing set, everything lives under `DISTILLERY_HOME` (default `./.distillery`): a SQLite
database, a serverless Celery broker (kombu's SQLAlchemy transport on its own SQLite file) and a
local artifact directory. Setting `DISTILLERY_DATABASE_URL=postgresql+psycopg://...` and
`DISTILLERY_BROKER_URL=redis://...` moves to PostgreSQL and Redis with no code change.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTILLERY_", extra="ignore")

    home: Path = Field(default=Path(".distillery"), description="Root of the embedded default")
    database_url: str | None = None
    broker_url: str | None = None
    artifact_dir: Path | None = None
    # Where artifacts live: unset (or file:///path) is the local artifact_dir; s3://bucket/prefix
    # is an S3-compatible object store shared by API and workers on different hosts.
    # Credentials and region come the standard AWS ways (AWS_ACCESS_KEY_ID, AWS_PROFILE, a role).
    artifact_url: str | None = None
    # A non-AWS object store (MinIO, Ceph): http://minio:9000
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    # "json": one JSON object per log line (request_id, job_id); "text" for reading locally.
    log_format: Literal["json", "text"] = "text"
    log_level: str = "INFO"
    # Celery queue the API sends jobs to and workers consume; tests use their own per run.
    task_queue: str = "distillery"
    max_upload_bytes: int = 512 * 1024 * 1024
    # Off only for the embedded single-user default: then every caller sees everything, and the
    # startup log and /healthz say so. Keys are made with `distillery keys create`.
    auth_enabled: bool = False
    # Server-side folders whose tables may be registered by path (POST /v1/datasets/from-path);
    # empty turns that route off. JSON list in the environment: '["/data/shared"]'.
    allowed_data_roots: list[Path] = Field(default_factory=list)
    # Loaded models kept in memory by the predict endpoint, bounded by count and by bytes of
    # weights; the least recently used goes first.
    model_cache_size: int = 4
    model_cache_max_bytes: int = 4 * 1024**3
    # Model ids (or "mdl_...:int8") loaded and warmed up at startup. JSON list in the environment.
    preload_models: list[str] = Field(default_factory=list)
    # "auto" serves on CUDA when this process sees a GPU; "cpu" or "cuda" to choose.
    serving_device: str = "auto"
    # Micro-batching: concurrent predict requests for one model share a forward pass of up to
    # this many rows, waiting at most this long for company; 1 turns batching off.
    predict_max_batch_rows: int = 32
    predict_max_wait_ms: float = 5.0
    # Rows queued per model beyond which predict answers 429 with Retry-After.
    predict_max_queue_rows: int = 2048
    predict_timeout_seconds: float = 30.0
    # How long predict may reuse a model's row (owner, storage, default variant) read from the
    # database for the same key, instead of reading it on every request (0: every request). A
    # delete or a new default made through this process takes effect at once; through another
    # API process, within this long.
    predict_lookup_ttl_seconds: float = 2.0
    predict_max_rows: int = 1024
    # Characters per text cell; longer is a 422 unless the request says "truncate": true.
    predict_max_text_chars: int = 20_000
    # A merged batch runs as length-sorted chunks of this many rows, so short rows are not
    # padded to the longest of 32 (0: 8 on CPU, the whole batch on CUDA).
    predict_chunk_rows: int = 0
    # Forward passes run in this many threads; on a CPU more only split the same cores.
    inference_threads: int = 1
    # torch intra-op threads in the API process (0: torch's default, one per core). On a CPU
    # shared with other busy processes, 1 avoids OpenMP threads waiting on descheduled peers.
    inference_torch_threads: int = 0
    # Serve torch models (float, int8) on a CPU as frozen TorchScript when the traced model
    # matches the eager one: it runs without holding the GIL (distillery/scripted.py).
    serving_torchscript: bool = True
    # Python's GIL switch interval in the API process, in ms (0: Python's own, 5). The inference
    # thread lets the GIL go for each forward pass and must win it back from a busy event loop
    # after, waiting up to one interval each time. On 2 cores, HTTP at concurrency 32 went from
    # 0.64 to 0.80 of the raw model's speed in stop 31's bench/serve.py, and 0.58-0.66 to 0.71-0.84
    # for bench/quality.py's 3.8x student (no better below 0.1 ms; README, serving bench).
    gil_switch_interval_ms: float = 0.1
    # Serving variants made after every successful distill job, and the tuning rows (at most)
    # each is scored on against the float model.
    variants_after_distill: list[str] = Field(default_factory=lambda: ["int8"])
    variant_eval_max_rows: int = 2000

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
