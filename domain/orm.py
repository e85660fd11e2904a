"""SQLAlchemy 2 typed models: Dataset, Model, ModelVariant, Job, JobEvent, ApiKey, Idempotency.

The Job row is the source of truth. `owner` on datasets, models and jobs is the id of the API key
that created the row (None when auth is off); a caller sees only its own rows unless it is admin.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from domain.status import JobStatus

JOB_KINDS = ("finetune", "distill", "auto_distill")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def is_well_formed_id(prefix: str, value: str) -> bool:
    """Whether `value` could be an id made by new_id(prefix): anything else is not looked up
    (PostgreSQL refuses text with NUL bytes, for one)."""
    head, _, tail = value.partition("_")
    return head == prefix and len(tail) == 20 and all(c in "0123456789abcdef" for c in tail)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend: SQLite stores no zone and hands back naive times."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime; use domain.orm.utcnow()")
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("ds"))
    name: Mapped[str] = mapped_column(String(255))
    filename: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(16))
    row_count: Mapped[int] = mapped_column(Integer)
    columns: Mapped[list[Any]] = mapped_column(JSON)
    text_columns: Mapped[list[Any]] = mapped_column(JSON)
    label_column: Mapped[str | None] = mapped_column(String(255))
    problem_type: Mapped[str | None] = mapped_column(String(16))
    label_counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Relative to the artifact store's root.
    storage_key: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    owner: Mapped[str | None] = mapped_column(String(32), index=True)
    # Deleted rows stay (finished jobs still name them) but are gone from the API and the store.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Model(Base):
    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("mdl"))
    name: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(16))  # "upload" or "job"
    problem_type: Mapped[str] = mapped_column(String(16))
    labels: Mapped[list[Any]] = mapped_column(JSON)
    text_columns: Mapped[list[Any]] = mapped_column(JSON)
    architecture: Mapped[str] = mapped_column(String(128))
    num_parameters: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(String(512))
    job_id: Mapped[str | None] = mapped_column(String(32))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    owner: Mapped[str | None] = mapped_column(String(32), index=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The serving variant predict uses when the request names none ("float" or a made variant).
    default_variant: Mapped[str] = mapped_column(
        String(16), default="float", server_default="float"
    )


class ModelVariant(Base):
    """A serving variant of a model (int8, ...) and the accuracy it gives up against float."""

    __tablename__ = "model_variants"
    __table_args__ = (UniqueConstraint("model_id", "kind"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("var"))
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    storage_key: Mapped[str] = mapped_column(String(512))
    # Scores of float and variant on the same labelled rows, agreement, accuracy_drop_points.
    comparison: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dataset_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("job"))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value, index=True)
    train_dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"))
    tuning_dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"))
    teacher_model_id: Mapped[str | None] = mapped_column(ForeignKey("models.id"))
    unlabeled_dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"))
    label: Mapped[str] = mapped_column(String(255))
    text_columns: Mapped[list[Any]] = mapped_column(JSON)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The job plan built and validated at submit (distillery/plan.py): the worker runs it as
    # stored instead of parsing the request again. NULL only on rows from before plans.
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_message: Mapped[str | None] = mapped_column(Text)
    result_model_id: Mapped[str | None] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(255))
    device: Mapped[str | None] = mapped_column(String(32))
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    # "any", "gpu" or "cpu": picks the Celery queue, so GPU and CPU workers can coexist.
    accelerator: Mapped[str] = mapped_column(String(8), default="any")
    # When the job's message was last sent; the reaper re-sends messages lost before a claim.
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    owner: Mapped[str | None] = mapped_column(String(32), index=True)
    # Auto-distill (domain/auto_distill.py): a trial names the search that queued it; the
    # search records its phase ("planning", then "trials" while it waits on them, "done").
    parent_job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    phase: Mapped[str | None] = mapped_column(String(16))

    train_dataset: Mapped[Dataset] = relationship(foreign_keys=[train_dataset_id])
    tuning_dataset: Mapped[Dataset | None] = relationship(foreign_keys=[tuning_dataset_id])
    teacher_model: Mapped[Model | None] = relationship(foreign_keys=[teacher_model_id])
    unlabeled_dataset: Mapped[Dataset | None] = relationship(foreign_keys=[unlabeled_dataset_id])
    events: Mapped[list[JobEvent]] = relationship(
        back_populates="job", order_by="JobEvent.id", cascade="all, delete-orphan"
    )


class JobMetric(Base):
    """One logging step (loss terms, learning rate, throughput) or one validation of a job."""

    __tablename__ = "job_metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # "train" or "validation"
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[float] = mapped_column(Float)
    values: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    job: Mapped[Job] = relationship(back_populates="events")


class ApiKey(Base):
    """An API key: only the SHA-256 of its secret is kept; the secret is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("key"))
    name: Mapped[str] = mapped_column(String(255))
    # The secret's first characters, so a listing can tell keys apart without revealing them.
    prefix: Mapped[str] = mapped_column(String(16))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class IdempotencyRecord(Base):
    """The first response to a POST sent with an Idempotency-Key, replayed to its retries."""

    __tablename__ = "idempotency_records"
    __table_args__ = (
        UniqueConstraint("owner", "key", "endpoint", name="uq_idempotency_owner_key_endpoint"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The caller's key id, or "anonymous" with auth off (NULLs would not collide in the
    # unique constraint).
    owner: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(255))
    endpoint: Mapped[str] = mapped_column(String(255))  # "POST /v1/jobs"
    request_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # "in_flight" or "done"
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
