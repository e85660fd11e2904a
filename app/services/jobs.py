"""Submit jobs: validate everything that can be checked up front, then record and enqueue."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

from celery import Celery
from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from app.auth import Caller
from app.errors import Problem, not_found
from app.orm import Dataset, Job, JobEvent, JobMetric, Model, is_well_formed_id, utcnow
from app.pagination import paginate
from app.queue import enqueue_job, queue_for
from app.schemas import JobCreate
from app.services.datasets import get_dataset
from app.services.models import encoder_layer_count, get_model, resolve_backbone
from app.storage import ArtifactStore
from distillery.backbones import BackboneError
from distillery.hyperparams import (
    DISTILLER_KEYS,
    TEACHER_CHECKPOINT,
    HyperparameterError,
    parse_hyperparameters,
)
from distillery.report import distillation_ratio
from distillery.tables import describe_table

log = logging.getLogger(__name__)
CHECKPOINT_KEY = "model.hf_text.checkpoint_name"


def _check_columns(dataset: Dataset, label: str, text_columns: list[str], field: str) -> None:
    missing = [c for c in [*text_columns, label] if c not in dataset.columns]
    if missing:
        raise Problem(
            422,
            "Column not found",
            f"dataset '{dataset.id}' has no column(s) {', '.join(missing)}; its columns are: "
            f"{', '.join(dataset.columns)}",
            field=field,
        )


def label_space(
    store: ArtifactStore, dataset: Dataset, label: str, text_columns: list[str]
) -> tuple[str, list[str]]:
    """Problem type and sorted class names of `label` in `dataset`."""
    if label == dataset.label_column and dataset.problem_type is not None:
        return dataset.problem_type, sorted(dataset.label_counts)
    # Another column than the one inferred at upload: describe it now.
    schema = describe_table(store.read_table(dataset.storage_key), label, text_columns)
    assert schema.problem_type is not None
    return schema.problem_type, schema.label_classes


def student_backbone(
    session: Session,
    store: ArtifactStore,
    checkpoint_name: str,
    teacher: Model | None,
    caller: Caller | None = None,
    allowed_roots: list[Path] | None = None,
) -> Path:
    """The student's starting checkpoint; `teacher` names the distill job's own teacher, so a
    student can be cut from the teacher's layers (`model.hf_text.layers`: [0, 2, 4])."""
    if checkpoint_name == TEACHER_CHECKPOINT:
        if teacher is None:
            raise BackboneError(
                f"checkpoint '{TEACHER_CHECKPOINT}' means the job's teacher; only distill jobs "
                "have one"
            )
        return store.local_folder(teacher.storage_key)
    return resolve_backbone(session, store, checkpoint_name, caller, allowed_roots)


def submit_job(
    session: Session,
    store: ArtifactStore,
    celery: Celery,
    base_queue: str,
    request: JobCreate,
    caller: Caller,
    allowed_roots: list[Path] | None = None,
) -> Job:
    """Validate and queue a job owned by `caller`, who must be able to see every dataset and
    model it names (and, for a non-admin, every checkpoint folder must lie in `allowed_roots`)."""
    train = get_dataset(session, request.train_dataset, "train_dataset", caller=caller)
    label = request.label or train.label_column
    if label is None:
        raise Problem(
            422,
            "No label column",
            f"dataset '{train.id}' has no column named 'label'; name one with label "
            f"(columns: {', '.join(train.columns)})",
            field="label",
        )
    text_columns = request.text_columns or [c for c in train.text_columns if c != label]
    _check_columns(train, label, text_columns, "label")
    problem_type, classes = label_space(store, train, label, text_columns)

    if request.tuning_dataset is not None:
        tuning = get_dataset(session, request.tuning_dataset, "tuning_dataset", caller=caller)
        _check_columns(tuning, label, text_columns, "tuning_dataset")

    config = parse_hyperparameters(request.hyperparameters)
    teacher = None
    if request.kind == "distill":
        if request.teacher_model is None:
            raise Problem(
                422, "Teacher required", "a distill job needs teacher_model", field="teacher_model"
            )
        teacher = get_model(session, request.teacher_model, "teacher_model", caller=caller)
        classification = "regression" not in (teacher.problem_type, problem_type)
        if classification and sorted(teacher.labels) != classes:
            raise Problem(
                422,
                "Teacher does not fit",
                f"the teacher's labels ({', '.join(sorted(teacher.labels))}) differ "
                f"from the dataset's ({', '.join(classes)})",
                field="teacher_model",
            )
        if teacher.problem_type != problem_type:
            raise Problem(
                422,
                "Teacher does not fit",
                f"the teacher does {teacher.problem_type}, the dataset's label "
                f"'{label}' is {problem_type}",
                field="teacher_model",
            )
        missing = [c for c in teacher.text_columns if c not in train.columns]
        if missing:
            raise Problem(
                422,
                "Teacher does not fit",
                f"the teacher reads column(s) {', '.join(missing)}, which the training "
                "dataset lacks",
                field="teacher_model",
            )
    else:
        if request.teacher_model is not None:
            raise Problem(
                422,
                "Unexpected teacher",
                "a finetune job trains without a teacher; use kind=distill",
                field="teacher_model",
            )
        given = [k for k in request.hyperparameters if k in DISTILLER_KEYS]
        if given:
            raise HyperparameterError(given[0], "distiller settings apply to distill jobs only")
        if request.unlabeled_dataset is not None:
            raise Problem(
                422,
                "Transfer set needs a teacher",
                "unlabelled rows learn only from a teacher; use kind=distill",
                field="unlabeled_dataset",
            )

    if request.unlabeled_dataset is not None:
        unlabeled = get_dataset(
            session, request.unlabeled_dataset, "unlabeled_dataset", caller=caller
        )
        needed = sorted(set(text_columns) | set(teacher.text_columns if teacher else []))
        missing = [c for c in needed if c not in unlabeled.columns]
        if missing:
            raise Problem(
                422,
                "Column not found",
                f"dataset '{unlabeled.id}' has no column(s) {', '.join(missing)}, which the "
                f"student or teacher reads; its columns are: {', '.join(unlabeled.columns)}",
                field="unlabeled_dataset",
            )

    try:
        backbone = student_backbone(
            session, store, config.checkpoint_name, teacher, caller, allowed_roots
        )
        layer_count = encoder_layer_count(backbone)
    except (BackboneError, OSError, ValueError) as exc:
        raise HyperparameterError(CHECKPOINT_KEY, str(exc)) from None
    wanted = (
        config.layers
        if isinstance(config.layers, int)
        else (max(config.layers) + 1 if config.layers else None)
    )
    if wanted is not None and layer_count is not None and wanted > layer_count:
        raise HyperparameterError(
            "model.hf_text.layers",
            f"the checkpoint has {layer_count} encoder layers; asked for {config.layers}",
        )

    job = Job(
        kind=request.kind,
        train_dataset_id=train.id,
        tuning_dataset_id=request.tuning_dataset,
        unlabeled_dataset_id=request.unlabeled_dataset,
        teacher_model_id=teacher.id if teacher else None,
        label=label,
        text_columns=text_columns,
        hyperparameters=dict(request.hyperparameters),
        accelerator=request.accelerator,
        owner=caller.owner,
    )
    session.add(job)
    session.flush()
    session.add(JobEvent(job_id=job.id, kind="queued", message=f"{request.kind} job queued"))
    session.commit()
    try:
        send_job(session, celery, job, base_queue)
    except Exception as exc:  # the broker is down: say so instead of leaving a job that never runs
        log.exception("could not enqueue job %s", job.id)
        job.status, job.error_code = "failed", "internal"
        job.error_message = f"the job could not be queued: {exc}"
        job.finished_at = utcnow()
        session.commit()
        raise Problem(
            503,
            "Queue unavailable",
            "the job queue is not reachable; try again later",
            extra={"job": job.id},
        ) from exc
    return job


def send_job(session: Session, celery: Celery, job: Job, base_queue: str) -> None:
    """(Re)send the job's message to the queue its accelerator asks for."""
    job.enqueued_at = utcnow()
    session.commit()
    enqueue_job(celery, job.id, queue_for(base_queue, job.accelerator))


def get_job(session: Session, job_id: str, *, caller: Caller) -> Job:
    """The job, if `caller` may see it; else 404 (someone else's job is as absent as a missing
    one)."""
    job = session.get(Job, job_id) if is_well_formed_id("job", job_id) else None
    if job is None or not caller.can_see(job.owner):
        raise not_found("job", job_id)
    return job


def list_jobs(
    session: Session,
    status: str | None,
    kind: str | None,
    limit: int,
    cursor: str | None,
    caller: Caller,
) -> tuple[list[Job], str | None]:
    query = caller.visible(select(Job), Job.owner)
    if status is not None:
        query = query.where(Job.status == status)
    if kind is not None:
        query = query.where(Job.kind == kind)
    return paginate(session, query, Job.created_at, Job.id, limit, cursor)


def cancel_job(session: Session, job_id: str, caller: Caller) -> Job:
    """Idempotent: queued -> cancelled now; running -> flagged, the worker stops at its next
    check; a finished job is returned unchanged."""
    job = get_job(session, job_id, caller=caller)
    now = utcnow()
    cancelled_now = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(
            status="cancelled",
            error_code="cancelled",
            error_message="cancelled by request",
            finished_at=now,
            cancel_requested=True,
        )
    )
    if cast(CursorResult[Any], cancelled_now).rowcount:
        session.add(JobEvent(job_id=job_id, kind="cancelled", message="cancelled before it ran"))
    else:
        flagged = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running", Job.cancel_requested.is_(False))
            .values(cancel_requested=True)
        )
        if cast(CursorResult[Any], flagged).rowcount:
            session.add(
                JobEvent(
                    job_id=job_id,
                    kind="cancel_requested",
                    message="the worker stops at its next step check",
                )
            )
    session.commit()
    session.refresh(job)
    return job


def job_report(
    session: Session, job_id: str, baseline_job_id: str | None, caller: Caller
) -> dict[str, Any]:
    """A distill job's report, with the distillation ratio against a named baseline: a
    finished fine-tune job of the same student scored on the same tuning dataset."""
    job = get_job(session, job_id, caller=caller)
    report = job.metrics.get("report")
    if job.kind != "distill" or report is None:
        reason = (
            "only distill jobs have a report"
            if job.kind != "distill"
            else f"the job is {job.status}; its report is written when it succeeds with a "
            "tuning dataset"
        )
        raise Problem(409 if job.kind == "distill" else 422, "No report", reason, field="job_id")
    result: dict[str, Any] = {"job": job.id, "model": job.result_model_id, **report}
    # Model names are the users' own words: shown on the rendered report, so carried here.
    result["names"] = {
        "student": model_name(session, job.result_model_id),
        "teacher": model_name(session, job.teacher_model_id),
    }
    if baseline_job_id is None:
        return result
    baseline = get_job(session, baseline_job_id, caller=caller)
    if baseline.status != "succeeded" or baseline.tuning_dataset_id != job.tuning_dataset_id:
        raise Problem(
            422,
            "Unusable baseline",
            "the baseline must be a succeeded job scored on the same tuning dataset "
            f"({job.tuning_dataset_id}); job {baseline.id} is {baseline.status} with tuning "
            f"dataset {baseline.tuning_dataset_id}",
            field="baseline_job",
        )
    metric = "rmse" if "rmse" in report["student"] else "accuracy"
    baseline_tuning = baseline.metrics.get("tuning", {})
    baseline_score = baseline_tuning.get(metric)
    baseline_model = (
        session.get(Model, baseline.result_model_id) if baseline.result_model_id else None
    )
    # Its tuning metrics and size are on record; its CPU latency is not measured (None).
    result["baseline"] = {
        **{k: v for k, v in baseline_tuning.items() if k in report["student"]},
        "job": baseline.id,
        "model": baseline.result_model_id,
        metric: baseline_score,
        "parameters": baseline_model.num_parameters if baseline_model else None,
        "size_bytes": baseline_model.size_bytes if baseline_model else None,
    }
    result["names"]["baseline"] = baseline_model.name if baseline_model else None
    if baseline_score is not None:
        result["distillation_ratio"] = distillation_ratio(
            report["student"][metric], baseline_score, report["teacher"][metric]
        )
    return result


def model_name(session: Session, model_id: str | None) -> str | None:
    model = session.get(Model, model_id) if model_id else None
    return model.name if model else None


def job_events(session: Session, job_id: str, caller: Caller) -> list[JobEvent]:
    get_job(session, job_id, caller=caller)
    return list(
        session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
    )


def job_metrics(
    session: Session, job_id: str, kind: str | None, after_step: int | None, caller: Caller
) -> list[JobMetric]:
    get_job(session, job_id, caller=caller)
    query = select(JobMetric).where(JobMetric.job_id == job_id)
    if kind is not None:
        query = query.where(JobMetric.kind == kind)
    if after_step is not None:
        query = query.where(JobMetric.step > after_step)
    return list(session.scalars(query.order_by(JobMetric.id)))
