"""Jobs: submit (plan and check everything up front, then record and enqueue), read, cancel,
report."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from distillery.backbones import BackboneError, CheckpointShape, checkpoint_shape
from distillery.hyperparams import TEACHER_CHECKPOINT
from distillery.plan import CHECKPOINT_KEY, JobPlan, TeacherFacts, plan_job
from distillery.report import distillation_ratio
from distillery.tables import describe_table
from domain import lifecycle
from domain.auth import LOCAL_CALLER, Caller
from domain.auto_distill import (
    AUTO_KIND,
    cancel_search,
    check_search_request,
    planning_hyperparameters,
    search_spec,
)
from domain.datasets import get_dataset
from domain.errors import Conflict, Invalid, Unavailable
from domain.models import get_model, resolve_backbone
from domain.orm import Dataset, Job, JobEvent, JobMetric, Model
from domain.pagination import paginate
from domain.queue import enqueue_job, queue_for
from domain.rows import visible_row
from domain.storage import ArtifactStore

log = logging.getLogger(__name__)


def _check_columns(dataset: Dataset, label: str, text_columns: list[str], field: str) -> None:
    missing = [c for c in [*text_columns, label] if c not in dataset.columns]
    if missing:
        raise Invalid(
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


def teacher_training_rows(session: Session, teacher: Model) -> Dataset | None:
    """The rows the teacher was trained on, when a job of this service trained it and its
    training dataset still exists (lineage: the model's job, that job's train dataset)."""
    job = session.get(Job, teacher.job_id) if teacher.job_id else None
    if job is None or job.train_dataset.deleted_at is not None:
        return None
    return job.train_dataset


def teacher_facts(session: Session, teacher: Model) -> TeacherFacts:
    rows = teacher_training_rows(session, teacher)
    return TeacherFacts(
        problem_type=teacher.problem_type,
        labels=list(teacher.labels),
        text_columns=list(teacher.text_columns),
        training_rows=rows.id if rows is not None else None,
        training_columns=list(rows.columns) if rows is not None else [],
    )


@dataclass(frozen=True)
class JobRequest:
    """A job as asked for (the API's JobCreate body), before anything is checked."""

    kind: str
    train_dataset: str
    tuning_dataset: str | None = None
    teacher_model: str | None = None
    unlabeled_dataset: str | None = None
    label: str | None = None
    text_columns: list[str] | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    accelerator: str = "any"
    # kind auto_distill: the search's budget and settings (domain/auto_distill.py).
    auto: dict[str, Any] | None = None


def _plan(
    session: Session,
    store: ArtifactStore,
    request: JobRequest,
    caller: Caller,
    allowed_roots: list[Path] | None,
) -> tuple[JobPlan, Model | None]:
    """The request's plan and teacher, every name resolved as `caller` may see it."""
    kind, hyperparameters, auto = request.kind, request.hyperparameters, None
    if request.kind == AUTO_KIND:
        check_search_request(hyperparameters, request.tuning_dataset, request.teacher_model)
        auto = search_spec(request.auto)
        # Checked as a distill job of a cut of the teacher; each trial is planned again.
        kind, hyperparameters = "distill", planning_hyperparameters(hyperparameters)
    elif request.auto is not None:
        raise Invalid("Not a search", "auto settings apply to kind auto_distill only", field="auto")
    train = get_dataset(session, request.train_dataset, "train_dataset", caller=caller)
    label = request.label or train.label_column
    if label is None:
        raise Invalid(
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
    teacher = (
        get_model(session, request.teacher_model, "teacher_model", caller=caller)
        if request.teacher_model is not None
        else None
    )

    def student_shape(name: str) -> CheckpointShape:
        return checkpoint_shape(
            student_backbone(session, store, name, teacher, caller, allowed_roots)
        )

    plan = plan_job(
        kind,
        hyperparameters,
        label=label,
        text_columns=text_columns,
        problem_type=problem_type,
        labels=classes,
        train_columns=train.columns,
        teacher=teacher_facts(session, teacher) if teacher is not None else None,
        has_unlabeled=request.unlabeled_dataset is not None,
        checkpoint_shape=student_shape,
    )
    if request.unlabeled_dataset is not None:
        unlabeled = get_dataset(
            session, request.unlabeled_dataset, "unlabeled_dataset", caller=caller
        )
        missing = [c for c in plan.transfer_columns if c not in unlabeled.columns]
        if missing:
            raise Invalid(
                "Column not found",
                f"dataset '{unlabeled.id}' has no column(s) {', '.join(missing)}, which the "
                f"student or teacher reads; its columns are: {', '.join(unlabeled.columns)}",
                field="unlabeled_dataset",
            )
    if auto is not None:
        if plan.problem_type == "regression":
            raise Invalid(
                "Not a classifier",
                "auto-distill ranks students by tuning accuracy; the label is a regression target",
                field="label",
            )
        for index, name in enumerate(auto.students or []):
            try:
                student_shape(name)
            except (BackboneError, OSError, ValueError) as exc:
                raise Invalid(
                    "Unusable student", str(exc), field=f"auto.students.{index}"
                ) from None
        plan = replace(plan, auto=auto.to_json())
    return plan, teacher


def submit_job(
    session: Session,
    store: ArtifactStore,
    celery: Celery,
    base_queue: str,
    request: JobRequest,
    caller: Caller,
    allowed_roots: list[Path] | None = None,
) -> Job:
    """Validate and queue a job owned by `caller`, who must be able to see every dataset and
    model it names (and, for a non-admin, every checkpoint folder must lie in `allowed_roots`).

    Everything the job will do is checked here, by `distillery.plan.plan_job`, and the plan is
    stored on the row: a job that is queued is one the worker can run."""
    plan, teacher = _plan(session, store, request, caller, allowed_roots)
    job = lifecycle.queue(
        session,
        Job(
            kind=request.kind,
            train_dataset_id=request.train_dataset,
            tuning_dataset_id=request.tuning_dataset,
            unlabeled_dataset_id=request.unlabeled_dataset,
            teacher_model_id=teacher.id if teacher else None,
            label=plan.label,
            text_columns=plan.text_columns,
            hyperparameters=dict(request.hyperparameters),
            plan=plan.to_json(),
            accelerator=request.accelerator,
            owner=caller.owner,
            phase=lifecycle.PLANNING if request.kind == AUTO_KIND else None,
        ),
    )
    try:
        send_job(session, celery, job, base_queue)
    except Exception as exc:  # the broker is down: say so instead of leaving a job that never runs
        log.exception("could not enqueue job %s", job.id)
        lifecycle.fail_unqueued(session, job, str(exc))
        raise Unavailable(
            "Queue unavailable",
            "the job queue is not reachable; try again later",
            extra={"job": job.id},
        ) from exc
    return job


def job_plan(session: Session, store: ArtifactStore, job: Job) -> JobPlan:
    """The plan stored at submit. A job queued before plans were stored is planned now, by the
    same function, from what its row records (it was checked when submitted)."""
    if job.plan is not None:
        return JobPlan.from_json(job.plan)
    request = JobRequest(
        kind=job.kind,
        train_dataset=job.train_dataset_id,
        tuning_dataset=job.tuning_dataset_id,
        teacher_model=job.teacher_model_id,
        unlabeled_dataset=job.unlabeled_dataset_id,
        label=job.label,
        text_columns=list(job.text_columns),
        hyperparameters=dict(job.hyperparameters),
    )
    return _plan(session, store, request, LOCAL_CALLER, None)[0]


def send_job(session: Session, celery: Celery, job: Job, base_queue: str) -> None:
    """(Re)send the job's message to the queue its accelerator asks for."""
    lifecycle.mark_sent(session, job)
    enqueue_job(celery, job.id, queue_for(base_queue, job.accelerator))


def get_job(session: Session, job_id: str, *, caller: Caller) -> Job:
    """The job, if `caller` may see it (domain/rows.py); else NotFound."""
    return visible_row(session, Job, job_id, caller)


def list_jobs(
    session: Session,
    status: str | None,
    kind: str | None,
    limit: int,
    cursor: str | None,
    caller: Caller,
    parent_job: str | None = None,
) -> tuple[list[Job], str | None]:
    query = caller.visible(select(Job), Job.owner)
    if parent_job is not None:
        query = query.where(Job.parent_job_id == parent_job)
    if status is not None:
        query = query.where(Job.status == status)
    if kind is not None:
        query = query.where(Job.kind == kind)
    return paginate(session, query, Job.created_at, Job.id, limit, cursor)


def cancel_job(session: Session, job_id: str, caller: Caller) -> Job:
    """Idempotent: queued -> cancelled now; running -> flagged, the worker stops at its next
    check; a finished job is returned unchanged."""
    job = get_job(session, job_id, caller=caller)
    lifecycle.cancel(session, job_id)
    if job.kind == AUTO_KIND:
        # A search's trials go with it; it ends once the last of them has.
        cancel_search(session, job)
    session.refresh(job)
    return job


def job_report(
    session: Session, job_id: str, baseline_job_ids: Sequence[str], caller: Caller
) -> dict[str, Any]:
    """A distill job's report, with each named baseline (a finished fine-tune job scored on
    the same tuning dataset) as a control: how many points the teacher's outputs added over it
    and the distillation ratio. A baseline that starts from the distilled student's own
    starting weights is the *init-only* control; any other start is *no-distill*."""
    job = get_job(session, job_id, caller=caller)
    report = job.metrics.get("report")
    if job.kind != "distill" or report is None:
        reason = (
            "only distill jobs have a report"
            if job.kind != "distill"
            else f"the job is {job.status}; its report is written when it succeeds with a "
            "tuning dataset"
        )
        refusal = Conflict if job.kind == "distill" else Invalid
        raise refusal("No report", reason, field="job_id")
    result: dict[str, Any] = {"job": job.id, "model": job.result_model_id, **report}
    # Model names are the users' own words: shown on the rendered report, so carried here.
    result["names"] = {
        "student": model_name(session, job.result_model_id),
        "teacher": model_name(session, job.teacher_model_id),
    }
    result["baselines"] = [
        _baseline(session, job, report, get_job(session, baseline_id, caller=caller))
        for baseline_id in dict.fromkeys(baseline_job_ids)
    ]
    return result


def _baseline(session: Session, job: Job, report: dict[str, Any], baseline: Job) -> dict[str, Any]:
    if baseline.status != "succeeded" or baseline.tuning_dataset_id != job.tuning_dataset_id:
        raise Invalid(
            "Unusable baseline",
            "a baseline must be a succeeded job scored on the same tuning dataset "
            f"({job.tuning_dataset_id}); job {baseline.id} is {baseline.status} with tuning "
            f"dataset {baseline.tuning_dataset_id}",
            field="baseline_job",
        )
    regression = "rmse" in report["student"]
    metric = "rmse" if regression else "accuracy"
    tuning = baseline.metrics.get("tuning", {})
    score, student = tuning.get(metric), report["student"][metric]
    model = session.get(Model, baseline.result_model_id) if baseline.result_model_id else None
    # Its tuning metrics and size are on record; its CPU latency is not measured.
    entry: dict[str, Any] = {
        **{k: v for k, v in tuning.items() if k in report["student"]},
        "control": "init-only" if _start(baseline) == _start(job) else "no-distill",
        "job": baseline.id,
        "model": baseline.result_model_id,
        "name": model.name if model else None,
        "parameters": model.num_parameters if model else None,
        "size_bytes": model.size_bytes if model else None,
        "gain_points": None,
        "distillation_ratio": None,
    }
    if score is not None:
        # Points of accuracy the student gained; for regression, the RMSE it took off.
        entry["gain_points"] = score - student if regression else 100 * (student - score)
        entry["distillation_ratio"] = distillation_ratio(student, score, report["teacher"][metric])
    return entry


def _start(job: Job) -> tuple[str | None, Any]:
    """The weights a job's student starts from: its checkpoint (the teacher model itself where
    a distill job names "teacher") and the encoder layers it keeps."""
    config = (job.plan or {}).get("config", {})
    checkpoint = config.get("checkpoint_name", job.hyperparameters.get(CHECKPOINT_KEY))
    if checkpoint == TEACHER_CHECKPOINT:
        checkpoint = job.teacher_model_id
    return checkpoint, config.get("layers", job.hyperparameters.get("model.hf_text.layers"))


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
