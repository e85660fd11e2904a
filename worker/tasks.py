"""run_job(job_id): claim the job, train with distillery, write and register the model, finish.

Every way out of `run_job` leaves the job in a terminal state (succeeded, failed, cancelled), or
untouched when this delivery lost the claim, or when the reaper already gave the job to another
attempt. A worker that dies without a word (SIGKILL, lost machine) stops heartbeating; the
reaper (worker/reaper.py) then re-queues the job, and the next attempt resumes from the last
checkpoint.
"""

from __future__ import annotations

import contextvars
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import torch
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import task_postrun, task_prerun
from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings, get_settings
from app.db import make_engine, make_session_factory
from app.logging_setup import job_id_var
from app.orm import Job, JobEvent, JobMetric, Model, new_id, utcnow
from app.queue import RUN_JOB_TASK
from app.services.jobs import label_space, student_backbone
from app.services.models import register_bundle
from app.services.variants import make_variants_after_distill
from app.storage import ArtifactStore, checkpoint_key, make_store, model_key
from distillery.backbones import BackboneError, count_parameters
from distillery.bundle import BundleError, BundleMetadata, save_bundle
from distillery.checkpoints import remove_checkpoint
from distillery.hyperparams import (
    HyperparameterError,
    config_to_hyperparameters,
    parse_hyperparameters,
)
from distillery.predictor import Predictor
from distillery.report import distillation_report
from distillery.tables import TableError
from distillery.training import (
    CheckpointPolicy,
    TrainingCallbacks,
    TrainingCancelled,
    TrainingData,
    pick_device,
    train,
)
from worker.celery_app import celery
from worker.teacher_outputs import SharedTeacherCache

log = logging.getLogger("distillery.worker")
# Cancellation and ownership are read from the database at most this often.
STOP_CHECK_SECONDS = 1.0


class Superseded(Exception):
    """The reaper gave this job to another attempt (or it ended): stop without touching it."""


@lru_cache
def session_factory() -> sessionmaker[Session]:
    return make_session_factory(make_engine(get_settings().resolved_database_url()))


@lru_cache
def artifact_store() -> ArtifactStore:
    return make_store(get_settings())


def claim(session: Session, job_id: str, worker_name: str) -> int | None:
    """queued -> running by compare-and-set; of two deliveries of one message, one wins.

    Returns the attempt number this worker now owns, or None if the job was not queued.
    """
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
            cancel_requested=False,
        )
    )
    session.commit()
    if not cast(CursorResult[Any], result).rowcount:
        return None
    return session.scalar(select(Job.attempt).where(Job.id == job_id))


def add_event(session: Session, job_id: str, kind: str, message: str, **data: Any) -> None:
    session.add(JobEvent(job_id=job_id, kind=kind, message=message, data=data))


def finish(
    session: Session,
    job_id: str,
    attempt: int,
    status: str,
    *,
    code: str | None = None,
    message: str | None = None,
    values: dict[str, Any] | None = None,
) -> bool:
    """running -> terminal, only while this attempt still owns the job."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "running", Job.attempt == attempt)
        .values(
            status=status,
            error_code=code,
            error_message=message,
            finished_at=utcnow(),
            **(values or {}),
        )
    )
    owned = bool(cast(CursorResult[Any], result).rowcount)
    if owned:
        add_event(session, job_id, status, message or status, attempt=attempt)
    session.commit()
    return owned


@contextmanager
def heartbeat(job_id: str, attempt: int, every_seconds: float) -> Iterator[None]:
    """Stamp heartbeat_at from a thread, so long steps (teacher inference, a big validation)
    never look like a dead worker."""
    stop = threading.Event()

    def beat() -> None:
        with session_factory()() as session:
            while not stop.wait(every_seconds):
                try:
                    session.execute(
                        update(Job)
                        .where(Job.id == job_id, Job.status == "running", Job.attempt == attempt)
                        .values(heartbeat_at=utcnow())
                    )
                    session.commit()
                except Exception:  # a missed beat is retried next time; never kill the job
                    log.warning("heartbeat for %s failed", job_id, exc_info=True)
                    session.rollback()

    # The thread runs in a copy of this context, so its log lines carry the job id too.
    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run, args=(beat,), name=f"heartbeat-{job_id}", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


class JobCallbacks(TrainingCallbacks):
    """Writes progress, metrics and events for one attempt; reads the cancel flag."""

    def __init__(
        self, session: Session, job: Job, attempt: int, store: ArtifactStore, checkpoints: Path
    ) -> None:
        self.session, self.job, self.attempt = session, job, attempt
        self.store, self.checkpoints = store, checkpoints
        self.last_check = 0.0

    def on_start(self, total_steps: int, info: dict[str, Any]) -> None:
        self.job.metrics = {**self.job.metrics, "info": info}
        if "resumed_from_step" in info:
            add_event(
                self.session,
                self.job.id,
                "resumed",
                f"attempt {self.attempt} resumed from the checkpoint at step "
                f"{info['resumed_from_step']}",
                step=info["resumed_from_step"],
            )
        add_event(
            self.session,
            self.job.id,
            "training_started",
            f"training for {total_steps} steps on {info['device']}",
            **info,
        )
        self.session.commit()

    def record(self, kind: str, step: int, epoch: float, values: dict[str, float]) -> None:
        self.session.add(
            JobMetric(
                job_id=self.job.id,
                attempt=self.attempt,
                kind=kind,
                step=step,
                epoch=epoch,
                values=values,
            )
        )

    def on_log(self, step: int, total_steps: int, epoch: float, values: dict[str, float]) -> None:
        self.record("train", step, epoch, values)
        self.job.progress = round(step / total_steps, 4)
        self.job.metrics = {**self.job.metrics, "latest": {"step": step, "epoch": epoch, **values}}
        self.session.commit()

    def on_validation(self, step: int, epoch: float, values: dict[str, float]) -> None:
        self.record("validation", step, epoch, values)
        self.job.metrics = {
            **self.job.metrics,
            "last_validation": {"step": step, "epoch": epoch, **values},
        }
        self.session.commit()

    def on_checkpoint(self, step: int, epoch: float) -> None:
        try:
            # In the store, so an attempt on another host can resume from it.
            self.store.sync_folder(checkpoint_key(self.job.id), self.checkpoints)
        except Exception:  # the job goes on; only a resume elsewhere would start over
            log.warning("could not copy the checkpoint to the store", exc_info=True)
        add_event(
            self.session,
            self.job.id,
            "checkpoint_saved",
            f"checkpoint at step {step}",
            step=step,
            epoch=round(epoch, 4),
        )
        self.session.commit()

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self.last_check < STOP_CHECK_SECONDS:
            return False
        self.last_check = now
        status, attempt, cancel = self.session.execute(
            select(Job.status, Job.attempt, Job.cancel_requested).where(Job.id == self.job.id)
        ).one()
        if status != "running" or attempt != self.attempt:
            raise Superseded(
                f"job is {status} at attempt {attempt}; this was attempt {self.attempt}"
            )
        return bool(cancel)


def training_inputs(
    session: Session, store: ArtifactStore, job: Job
) -> tuple[TrainingData, Predictor | None]:
    train_frame = store.read_table(job.train_dataset.storage_key)
    tuning_frame = store.read_table(job.tuning_dataset.storage_key) if job.tuning_dataset else None
    teacher = None
    if job.teacher_model is not None:
        teacher = Predictor(store.local_folder(job.teacher_model.storage_key))
        # The student adopts the teacher's label order, so their logits line up.
        problem_type, labels = teacher.problem_type, list(teacher.metadata.labels)
    else:
        problem_type, labels = label_space(store, job.train_dataset, job.label, job.text_columns)
    data = TrainingData(
        train=train_frame,
        tuning=tuning_frame,
        text_columns=list(job.text_columns),
        label_column=job.label,
        problem_type=problem_type,
        labels=labels,
        unlabeled=(
            store.read_table(job.unlabeled_dataset.storage_key) if job.unlabeled_dataset else None
        ),
    )
    return data, teacher


def job_device(accelerator: str) -> torch.device:
    if accelerator == "cpu":
        return torch.device("cpu")
    device = pick_device()
    if accelerator == "gpu" and device.type != "cuda":
        raise RuntimeError("the job asks for a GPU, but this worker has none (check its queues)")
    return device


def train_job(
    session: Session, store: ArtifactStore, settings: Settings, job: Job, attempt: int
) -> Model:
    config = parse_hyperparameters(job.hyperparameters)
    data, teacher = training_inputs(session, store, job)
    backbone_path = student_backbone(session, store, config.checkpoint_name, job.teacher_model)
    device = job_device(job.accelerator)
    job.device = str(device)
    session.commit()
    checkpoints = store.working_folder(checkpoint_key(job.id))
    store.pull_folder(checkpoint_key(job.id), checkpoints)

    result = train(
        config,
        data,
        backbone_path,
        teacher=teacher,
        # Bundles never change, so the teacher's model id is a complete fingerprint.
        teacher_cache=SharedTeacherCache(store),
        teacher_fingerprint=job.teacher_model_id,
        callbacks=JobCallbacks(session, job, attempt, store, checkpoints),
        device=device,
        checkpoints=CheckpointPolicy(
            folder=checkpoints, every_steps=settings.checkpoint_every_steps
        ),
    )

    model_id = new_id("mdl")
    metadata = BundleMetadata(
        problem_type=data.problem_type,
        labels=data.labels,
        text_columns=data.text_columns,
        max_text_len=config.max_text_len,
        num_parameters=count_parameters(result.backbone.model),
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
    staging = Path(tempfile.mkdtemp(prefix=".bundle-", dir=store.scratch_dir()))
    try:
        bundle = save_bundle(
            result.backbone.model, result.backbone.tokenizer, metadata, staging / model_id
        )
        store.put_folder(model_key(model_id), bundle)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    model = register_bundle(session, store, model_id, f"{job.kind}-{job.id}", job.id)
    # The saved student, loaded once on CPU for the report and the serving variants.
    student: Predictor | None = None
    if teacher is not None and data.tuning is not None:
        add_event(session, job.id, "report", "measuring the distillation report on tuning rows")
        session.commit()
        teacher.model.to("cpu")
        student = Predictor(store.local_folder(model.storage_key))
        report = distillation_report(
            student,
            teacher,
            data.tuning,
            data.label_column,
        )
        job.metrics = {**job.metrics, "report": report}
    job.metrics = {
        **job.metrics,
        "info": result.info,
        "tuning": result.tuning_metrics,
        "best_step": result.best_step,
    }
    session.commit()
    if job.kind == "distill" and data.tuning is not None and settings.variants_after_distill:
        # A student exists to be served cheaply: its CPU variants are ready when the job is.
        add_event(session, job.id, "variants", "making serving variants, scored on tuning rows")
        session.commit()
        make_variants_after_distill(
            session,
            store,
            model,
            data.tuning,
            data.label_column,
            kinds=settings.variants_after_distill,
            max_rows=settings.variant_eval_max_rows,
            dataset_id=job.tuning_dataset_id,
            student=student,
        )
    return model


def failure_of(exc: BaseException) -> tuple[str, str]:
    """The failure code and message a user can act on."""
    if isinstance(exc, TableError | HyperparameterError | BackboneError | BundleError):
        return "invalid_input", str(exc)
    if isinstance(exc, torch.OutOfMemoryError):
        return "out_of_memory", f"out of memory; lower env.per_gpu_batch_size ({exc})"
    if isinstance(exc, SoftTimeLimitExceeded):
        limit = get_settings().job_time_limit_seconds
        return "timeout", f"the job ran past its time limit ({limit} s)"
    return "internal", f"{type(exc).__name__}: {exc}"


@celery.task(name=RUN_JOB_TASK, bind=True)
def run_job(self: Any, job_id: str) -> None:
    settings = get_settings()
    store = artifact_store()
    worker_name = str(self.request.hostname or "worker")
    with session_factory()() as session:
        attempt = claim(session, job_id, worker_name)
        if attempt is None:
            log.info("job %s is not queued (claimed by another delivery, or ended)", job_id)
            return
        job = session.get(Job, job_id)
        assert job is not None
        add_event(
            session,
            job_id,
            "claimed",
            f"attempt {attempt} on {worker_name}",
            attempt=attempt,
            worker=worker_name,
        )
        session.commit()
        log.info("%s job, attempt %d on %s", job.kind, attempt, worker_name)
        keep_checkpoint = False
        try:
            with heartbeat(job_id, attempt, settings.heartbeat_seconds):
                model = train_job(session, store, settings, job, attempt)
        except Superseded as exc:
            session.rollback()
            keep_checkpoint = True  # the attempt that took over resumes from it
            log.warning("job %s: %s", job_id, exc)
        except TrainingCancelled as exc:
            session.rollback()
            finish(session, job_id, attempt, "cancelled", code="cancelled", message=str(exc))
        except Exception as exc:
            session.rollback()
            code, message = failure_of(exc)
            if code == "internal":
                log.exception("job %s failed", job_id)
            finish(session, job_id, attempt, "failed", code=code, message=message)
        except BaseException:
            # The process is being torn down (SystemExit, KeyboardInterrupt): leave the job
            # running with its checkpoint; the reaper re-queues it once the heartbeat stops.
            keep_checkpoint = True
            raise
        else:
            if not finish(
                session,
                job_id,
                attempt,
                "succeeded",
                message=f"model {model.id}",
                values={"result_model_id": model.id, "progress": 1.0},
            ):
                keep_checkpoint = True
        finally:
            if not keep_checkpoint:
                remove_checkpoint(store.working_folder(checkpoint_key(job_id)))
                try:
                    store.delete(checkpoint_key(job_id))
                except Exception:  # the job has ended; a stale copy in the store is only litter
                    log.warning("could not delete the checkpoint from the store", exc_info=True)


@task_prerun.connect(sender=run_job)
def enter_job_context(args: tuple[Any, ...] | None = None, **_: Any) -> None:
    """Every log line of a job, Celery's own included, carries its id (see app/logging_setup)."""
    job_id_var.set(args[0] if args else None)


@task_postrun.connect(sender=run_job)
def leave_job_context(**_: Any) -> None:
    job_id_var.set(None)
