"""run_job(job_id): claim the job, run its stored plan with distillery, publish the student,
finish.

Every way out of `run_job` leaves the job in a terminal state (succeeded, failed, cancelled), or
untouched when this delivery lost the claim, or when the reaper already gave the job to another
attempt. A worker that dies without a word (SIGKILL, lost machine) stops heartbeating; the
reaper (worker/reaper.py) then re-queues the job, and the next attempt resumes from the last
checkpoint. The transitions themselves are domain/lifecycle.py's.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import pandas as pd
import torch
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import task_postrun, task_prerun
from sqlalchemy.orm import Session

from distillery.backbones import BackboneError, count_parameters
from distillery.bundle import BundleError, BundleMetadata
from distillery.checkpoints import remove_checkpoint
from distillery.hyperparams import HyperparameterError, config_to_hyperparameters
from distillery.plan import JobPlan, PlanError
from distillery.predictor import Predictor
from distillery.report import distillation_report
from distillery.tables import TableError
from distillery.training import (
    CheckpointPolicy,
    TrainingCancelled,
    TrainingData,
    TrainingResult,
    pick_device,
    train,
)
from domain import lifecycle
from domain.auto_distill import AUTO_KIND, advance, trial_limits
from domain.config import get_settings
from domain.jobs import job_plan, student_backbone
from domain.logs import job_id_var
from domain.models import publish_trained
from domain.orm import Dataset, Job, Model
from domain.queue import RUN_JOB_TASK
from domain.runtime import Runtime, make_runtime
from domain.status import JobStatus
from domain.storage import ArtifactStore, checkpoint_key
from domain.variants import make_variants_after_distill
from worker.auto import BudgetNotMet, plan_search
from worker.celery_app import celery
from worker.progress import JobCallbacks, heartbeat
from worker.teacher_outputs import SharedTeacherCache

log = logging.getLogger("distillery.worker")


@lru_cache
def runtime() -> Runtime:
    return make_runtime(get_settings())


def transfer_rows(
    session: Session, store: ArtifactStore, job: Job, plan: JobPlan
) -> pd.DataFrame | None:
    """The transfer set: the unlabelled dataset's rows and, when the plan says so, the
    teacher's own training rows, both reduced to the columns student and teacher read."""
    frames = []
    if job.unlabeled_dataset is not None:
        frames.append(store.read_table(job.unlabeled_dataset.storage_key))
    if plan.teacher_training_rows is not None:
        rows = session.get(Dataset, plan.teacher_training_rows)
        if rows is None or rows.deleted_at is not None:
            raise TableError(
                f"the teacher's training dataset '{plan.teacher_training_rows}' was deleted "
                "after the job was queued"
            )
        frames.append(store.read_table(rows.storage_key))
    if len(frames) < 2:
        return frames[0] if frames else None
    return pd.concat([frame[plan.transfer_columns] for frame in frames], ignore_index=True)


def training_inputs(
    session: Session, store: ArtifactStore, job: Job, plan: JobPlan
) -> tuple[TrainingData, Predictor | None]:
    teacher = None
    if job.teacher_model is not None:
        teacher = Predictor(store.local_folder(job.teacher_model.storage_key))
    data = TrainingData(
        train=store.read_table(job.train_dataset.storage_key),
        tuning=store.read_table(job.tuning_dataset.storage_key) if job.tuning_dataset else None,
        text_columns=plan.text_columns,
        label_column=plan.label,
        problem_type=plan.problem_type,
        labels=plan.labels,
        unlabeled=transfer_rows(session, store, job, plan),
    )
    return data, teacher


def job_device(accelerator: str) -> torch.device:
    if accelerator == "cpu":
        return torch.device("cpu")
    device = pick_device()
    if accelerator == "gpu" and device.type != "cuda":
        raise RuntimeError("the job asks for a GPU, but this worker has none (check its queues)")
    return device


def student_metadata(job: Job, plan: JobPlan, result: TrainingResult) -> BundleMetadata:
    return BundleMetadata(
        problem_type=plan.problem_type,
        labels=plan.labels,
        text_columns=plan.text_columns,
        max_text_len=plan.config.max_text_len,
        num_parameters=count_parameters(result.backbone.model),
        architecture=type(result.backbone.model).__name__,
        metrics={"tuning": result.tuning_metrics},
        lineage={
            "job": job.id,
            "kind": job.kind,
            "teacher_model": job.teacher_model_id,
            "train_dataset": job.train_dataset_id,
            "tuning_dataset": job.tuning_dataset_id,
            "backbone": plan.config.checkpoint_name,
            "hyperparameters": config_to_hyperparameters(plan.config),
        },
    )


def train_job(session: Session, runtime: Runtime, job: Job, attempt: int) -> Model:
    store, settings = runtime.store, runtime.settings
    plan = job_plan(session, store, job)
    data, teacher = training_inputs(session, store, job, plan)
    backbone_path = student_backbone(session, store, plan.config.checkpoint_name, job.teacher_model)
    device = job_device(job.accelerator)
    job.device = str(device)
    session.commit()
    checkpoints = store.working_folder(checkpoint_key(job.id))
    store.pull_folder(checkpoint_key(job.id), checkpoints)

    callbacks = JobCallbacks(
        session, job, attempt, store, checkpoints, limits=trial_limits(session, job)
    )
    result = train(
        plan.config,
        data,
        backbone_path,
        teacher=teacher,
        # Bundles never change, so the teacher's model id is a complete fingerprint.
        teacher_cache=SharedTeacherCache(store),
        teacher_fingerprint=job.teacher_model_id,
        callbacks=callbacks,
        device=device,
        checkpoints=CheckpointPolicy(
            folder=checkpoints, every_steps=settings.checkpoint_every_steps
        ),
    )
    model, folder = publish_trained(
        session, store, result.backbone, student_metadata(job, plan, result), job
    )
    # The saved student, loaded once on CPU for the report and the serving variants.
    student: Predictor | None = None
    if teacher is not None and data.tuning is not None:
        callbacks.event("report", "measuring the distillation report on tuning rows")
        teacher.model.to("cpu")
        student = Predictor(folder)
        report = distillation_report(student, teacher, data.tuning, data.label_column)
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
        callbacks.event("variants", "making serving variants, scored on tuning rows")
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
    if isinstance(exc, TableError | HyperparameterError | BackboneError | BundleError | PlanError):
        return "invalid_input", str(exc)
    if isinstance(exc, BudgetNotMet):
        return "budget_not_met", str(exc)
    if isinstance(exc, torch.OutOfMemoryError):
        return "out_of_memory", f"out of memory; lower env.per_gpu_batch_size ({exc})"
    if isinstance(exc, SoftTimeLimitExceeded):
        limit = get_settings().job_time_limit_seconds
        return "timeout", f"the job ran past its time limit ({limit} s)"
    return "internal", f"{type(exc).__name__}: {exc}"


def discard_checkpoint(store: ArtifactStore, job_id: str) -> None:
    remove_checkpoint(store.working_folder(checkpoint_key(job_id)))
    try:
        store.delete(checkpoint_key(job_id))
    except Exception:  # the job has ended; a stale copy in the store is only litter
        log.warning("could not delete the checkpoint from the store", exc_info=True)


@celery.task(name=RUN_JOB_TASK, bind=True)
def run_job(self: Any, job_id: str) -> None:
    worker_name = str(self.request.hostname or "worker")
    context = runtime()
    with context.sessions() as session:
        attempt = lifecycle.claim(session, job_id, worker_name)
        if attempt is None:
            log.info("job %s is not queued (claimed by another delivery, or ended)", job_id)
            return
        job = session.get(Job, job_id)
        assert job is not None
        log.info("%s job, attempt %d on %s", job.kind, attempt, worker_name)
        keep_checkpoint = False
        parent_id = job.parent_job_id
        model: Model | None = None
        try:
            with heartbeat(context.sessions, job_id, attempt, context.settings.heartbeat_seconds):
                if job.kind == AUTO_KIND:
                    # Plans and queues the trials, then returns: the search waits on them
                    # without this worker (domain/auto_distill.py).
                    plan_search(session, context, job, attempt)
                else:
                    model = train_job(session, context, job, attempt)
        except lifecycle.Superseded as exc:
            session.rollback()
            keep_checkpoint = True  # the attempt that took over resumes from it
            log.warning("job %s: %s", job_id, exc)
        except TrainingCancelled as exc:
            session.rollback()
            lifecycle.finish(
                session, job_id, attempt, JobStatus.CANCELLED, code="cancelled", message=str(exc)
            )
        except Exception as exc:
            session.rollback()
            code, message = failure_of(exc)
            if code == "internal":
                log.exception("job %s failed", job_id)
            lifecycle.finish(session, job_id, attempt, JobStatus.FAILED, code=code, message=message)
        except BaseException:
            # The process is being torn down (SystemExit, KeyboardInterrupt): leave the job
            # running with its checkpoint; the reaper re-queues it once the heartbeat stops.
            keep_checkpoint = True
            raise
        else:
            if model is not None:
                keep_checkpoint = not lifecycle.finish(
                    session,
                    job_id,
                    attempt,
                    JobStatus.SUCCEEDED,
                    message=f"model {model.id}",
                    values={"result_model_id": model.id, "progress": 1.0},
                )
        finally:
            if not keep_checkpoint:
                discard_checkpoint(context.store, job_id)
        if parent_id is not None:
            advance_parent(session, parent_id)


def advance_parent(session: Session, parent_id: str) -> None:
    """A trial ended: move its search on (idempotent; if this is lost, the reaper does it)."""
    try:
        log.info("search %s: %s", parent_id, advance(session, parent_id))
    except Exception:
        session.rollback()
        log.warning("could not advance search %s; the reaper will", parent_id, exc_info=True)


@task_prerun.connect(sender=run_job)
def enter_job_context(args: tuple[Any, ...] | None = None, **_: Any) -> None:
    """Every log line of a job, Celery's own included, carries its id (see domain/logs.py)."""
    job_id_var.set(args[0] if args else None)


@task_postrun.connect(sender=run_job)
def leave_job_context(**_: Any) -> None:
    job_id_var.set(None)
