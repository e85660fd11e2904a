"""run_job(job_id): claim the job, train with distillery, write and register the model, finish.

Every way out of `run_job` leaves the job in a terminal state (succeeded, failed, cancelled), or
untouched when another delivery already claimed it.
"""

from __future__ import annotations

import logging
import socket
import time
from functools import lru_cache
from typing import Any, cast

import torch
from sqlalchemy import CursorResult, update
from sqlalchemy.orm import Session, sessionmaker

from app.config import get_settings
from app.db import make_engine, make_session_factory
from app.orm import Job, JobEvent, Model, new_id, utcnow
from app.queue import RUN_JOB_TASK
from app.services.jobs import label_space
from app.services.models import register_bundle, resolve_backbone
from app.storage import LocalArtifactStore, model_key
from distillery.backbones import BackboneError
from distillery.bundle import BundleError, BundleMetadata, save_bundle
from distillery.hyperparams import (
    HyperparameterError,
    config_to_hyperparameters,
    parse_hyperparameters,
)
from distillery.predictor import Predictor
from distillery.tables import TableError
from distillery.training import (
    TrainingCallbacks,
    TrainingCancelled,
    TrainingData,
    pick_device,
    train,
)
from worker.celery_app import celery

log = logging.getLogger("distillery.worker")
# Cancellation and heartbeats touch the database at most this often.
CANCEL_CHECK_SECONDS = 2.0


@lru_cache
def _session_factory() -> sessionmaker[Session]:
    return make_session_factory(make_engine(get_settings().resolved_database_url()))


@lru_cache
def _store() -> LocalArtifactStore:
    return LocalArtifactStore(get_settings().resolved_artifact_dir())


def claim(session: Session, job_id: str, worker_name: str) -> bool:
    """queued -> running by compare-and-set: of two deliveries of one message, one wins."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(
            status="running",
            attempt=Job.attempt + 1,
            worker=worker_name,
            started_at=now,
            heartbeat_at=now,
        )
    )
    session.commit()
    return bool(cast(CursorResult[Any], result).rowcount)


def add_event(session: Session, job_id: str, kind: str, message: str, **data: Any) -> None:
    session.add(JobEvent(job_id=job_id, kind=kind, message=message, data=data))


class JobCallbacks(TrainingCallbacks):
    """Writes progress and metrics to the job row; reads its cancel flag."""

    def __init__(self, session: Session, job: Job) -> None:
        self.session, self.job = session, job
        self.last_check = 0.0

    def on_start(self, total_steps: int, info: dict[str, Any]) -> None:
        self.job.metrics = {"info": info}
        add_event(
            self.session,
            self.job.id,
            "training_started",
            f"training for {total_steps} steps on {info['device']}",
            **info,
        )
        self.session.commit()

    def on_log(self, step: int, total_steps: int, epoch: float, values: dict[str, float]) -> None:
        self.job.progress = round(step / total_steps, 4)
        self.job.metrics = {**self.job.metrics, "latest": {"step": step, "epoch": epoch, **values}}
        self.job.heartbeat_at = utcnow()
        self.session.commit()

    def on_validation(self, step: int, epoch: float, values: dict[str, float]) -> None:
        self.job.metrics = {
            **self.job.metrics,
            "last_validation": {"step": step, "epoch": epoch, **values},
        }
        self.session.commit()

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self.last_check < CANCEL_CHECK_SECONDS:
            return False
        self.last_check = now
        self.session.refresh(self.job, ["cancel_requested"])
        return self.job.cancel_requested


def finish(
    session: Session, job: Job, status: str, *, code: str | None = None, message: str | None = None
) -> None:
    job.status = status
    job.error_code, job.error_message = code, message
    job.finished_at = utcnow()
    add_event(session, job.id, status, message or status)
    session.commit()


def train_job(session: Session, store: LocalArtifactStore, job: Job) -> Model:
    config = parse_hyperparameters(job.hyperparameters)
    train_frame = store.read_table(job.train_dataset.storage_key)
    tuning_frame = store.read_table(job.tuning_dataset.storage_key) if job.tuning_dataset else None
    teacher = None
    if job.teacher_model is not None:
        teacher = Predictor(store.path(job.teacher_model.storage_key))
        labels = list(teacher.metadata.labels)
        problem_type = teacher.problem_type
    else:
        problem_type, labels = label_space(store, job.train_dataset, job.label, job.text_columns)
    data = TrainingData(
        train=train_frame,
        tuning=tuning_frame,
        text_columns=list(job.text_columns),
        label_column=job.label,
        problem_type=problem_type,
        labels=labels,
    )
    backbone_path = resolve_backbone(session, store, config.checkpoint_name)
    device = pick_device()
    job.device = str(device)
    session.commit()

    result = train(
        config,
        data,
        backbone_path,
        teacher=teacher,
        callbacks=JobCallbacks(session, job),
        device=device,
    )

    model_id = new_id("mdl")
    metadata = BundleMetadata(
        problem_type=problem_type,
        labels=labels,
        text_columns=list(job.text_columns),
        max_text_len=config.max_text_len,
        num_parameters=sum(p.numel() for p in result.backbone.model.parameters()),
        architecture=type(result.backbone.model).__name__,
        metrics={"tuning": result.tuning_metrics},
        lineage={
            "job": job.id,
            "kind": job.kind,
            "teacher_model": job.teacher_model_id,
            "train_dataset": job.train_dataset_id,
            "tuning_dataset": job.tuning_dataset_id,
            "backbone": config.checkpoint_name,
            "hyperparameters": config_to_hyperparameters(config),
        },
    )
    save_bundle(
        result.backbone.model, result.backbone.tokenizer, metadata, store.path(model_key(model_id))
    )
    model = register_bundle(session, store, model_id, f"{job.kind}-{job.id}", job.id)
    job.metrics = {
        **job.metrics,
        "tuning": result.tuning_metrics,
        "best_step": result.best_step,
        "info": result.info,
        "history": result.history,
    }
    job.result_model_id = model.id
    job.progress = 1.0
    return model


@celery.task(name=RUN_JOB_TASK, bind=True)
def run_job(self: Any, job_id: str) -> None:
    worker_name = f"{self.request.hostname or socket.gethostname()}"
    with _session_factory()() as session:
        if not claim(session, job_id, worker_name):
            log.info("job %s was not queued (already claimed or gone); skipping", job_id)
            return
        job = session.get(Job, job_id)
        assert job is not None
        add_event(session, job_id, "claimed", f"attempt {job.attempt} on {worker_name}")
        session.commit()
        try:
            model = train_job(session, _store(), job)
        except TrainingCancelled as exc:
            session.rollback()
            finish(session, job, "cancelled", code="cancelled", message=str(exc))
        except (TableError, HyperparameterError, BackboneError, BundleError) as exc:
            session.rollback()
            finish(session, job, "failed", code="invalid_input", message=str(exc))
        except torch.OutOfMemoryError as exc:
            session.rollback()
            finish(
                session,
                job,
                "failed",
                code="out_of_memory",
                message=f"out of memory; lower env.per_gpu_batch_size: {exc}",
            )
        except Exception as exc:
            log.exception("job %s failed", job_id)
            session.rollback()
            finish(session, job, "failed", code="internal", message=f"{type(exc).__name__}: {exc}")
        else:
            finish(session, job, "succeeded", message=f"model {model.id} registered")
