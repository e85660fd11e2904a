"""An auto-distill search's planning step, on the worker that claimed it: measure every candidate
student's CPU latency here (this worker's machine class serves its CPU variants), prune those
that cannot meet the budget, plan the trials as ordinary distill jobs, queue them, and let the
search wait (domain/auto_distill.py). The worker slot is free again as soon as this returns:
no worker ever blocks waiting on trials."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.orm import Session

from distillery.auto import (
    NO_DISTILL,
    Candidate,
    SearchSpec,
    checkpoint_candidates,
    choose_candidates,
    control_epochs,
    plan_trials,
    probe_candidates,
    teacher_cuts,
)
from distillery.backbones import PACKAGED_CHECKPOINTS, BackboneError, checkpoint_shape
from distillery.plan import JobPlan
from distillery.training import TrainingCancelled, made_copies
from domain import lifecycle
from domain.auth import LOCAL_CALLER
from domain.auto_distill import deadline_after
from domain.jobs import JobRequest, _plan, job_plan, send_job, student_backbone
from domain.orm import Dataset, Job, utcnow
from domain.runtime import Runtime
from worker.celery_app import celery

log = logging.getLogger("distillery.worker")
# Rows of the tuning set each candidate's latency is measured on (the report's measure uses
# up to 64).
PROBE_ROWS = 64


class BudgetNotMet(Exception):
    """No candidate student can meet the search's budget, measured before any training."""


def candidates_for(
    session: Session, runtime: Runtime, job: Job, spec: SearchSpec
) -> tuple[list[Candidate], int]:
    assert job.teacher_model is not None
    teacher_folder = runtime.store.local_folder(job.teacher_model.storage_key)
    shape = checkpoint_shape(teacher_folder)
    depth = shape.layers or 1
    extra = (
        spec.students
        if spec.students is not None
        else [
            name
            for name in dict.fromkeys(PACKAGED_CHECKPOINTS)
            if not name.startswith("all-")  # the same model as its sentence-transformers/ name
        ]
    )
    usable = []
    for name in extra:
        try:
            student_backbone(session, runtime.store, name, job.teacher_model)
        except (BackboneError, OSError, ValueError) as exc:
            # A packaged model that is not installed here: not a candidate on this worker.
            log.info("student %s skipped: %s", name, exc)
            continue
        usable.append(name)
    return teacher_cuts(depth, shape.intermediate_size) + checkpoint_candidates(usable), depth


def distilled_rows(session: Session, job: Job, plan: JobPlan) -> int:
    """The rows a distilled trial trains on: the labelled ones, the copies and pairs made from
    them, the unlabelled dataset and the teacher's own training rows the plan resolved."""
    transfer = [job.unlabeled_dataset]
    if plan.teacher_training_rows is not None:
        transfer.append(session.get(Dataset, plan.teacher_training_rows))
    transfer_rows = sum(dataset.row_count for dataset in transfer if dataset is not None)
    labelled = job.train_dataset.row_count
    made = made_copies(
        plan.config,
        plan.text_columns,
        has_teacher=True,
        labelled_rows=labelled,
        has_transfer_set=transfer_rows > 0,
    )
    return labelled * (1 + made.per_row) + transfer_rows


def plan_search(session: Session, runtime: Runtime, job: Job, attempt: int) -> None:
    """Probe, prune, plan and queue the trials; raises BudgetNotMet when nothing fits and
    TrainingCancelled when the search was cancelled meanwhile."""
    plan = job_plan(session, runtime.store, job)
    assert plan.auto is not None and job.teacher_model is not None and job.tuning_dataset
    spec = SearchSpec.from_json(plan.auto)

    def should_stop() -> bool:
        return lifecycle.check_stop(session, job.id, attempt)

    candidates, depth = candidates_for(session, runtime, job, spec)
    teacher_folder = runtime.store.local_folder(job.teacher_model.storage_key)
    rows = runtime.store.read_table(job.tuning_dataset.storage_key).head(PROBE_ROWS)

    def resolve(candidate: Candidate) -> tuple[Path, int | list[int] | None]:
        folder = student_backbone(session, runtime.store, candidate.checkpoint, job.teacher_model)
        return folder, candidate.layers

    lifecycle.add_event(
        session,
        job.id,
        "probing",
        f"measuring the CPU latency of {len(candidates)} candidate students and the teacher",
        candidates=[c.name for c in candidates],
    )
    session.commit()
    teacher_latency, probes = probe_candidates(
        candidates,
        resolve,
        teacher_folder,
        rows,
        plan.config,
        plan.text_columns,
        max(1, len(plan.labels)),
        spec,
        should_stop,
    )
    if should_stop():
        raise TrainingCancelled("cancelled while planning the search")
    chosen = choose_candidates(probes, spec.candidates)
    job.metrics = {
        **job.metrics,
        "auto": {
            "teacher_latency": teacher_latency,
            "teacher_layers": depth,
            "probes": [probe.to_json() for probe in probes],
            "chosen": [probe.candidate.name for probe in chosen],
        },
    }
    session.commit()
    if not chosen:
        raise BudgetNotMet(
            f"none of {len(probes)} candidate students can meet {spec.budget.describe()} by "
            "their CPU latency measured on this worker (see the leaderboard's candidates)"
        )
    labelled = job.train_dataset.row_count
    control = control_epochs(plan.config, labelled, distilled_rows(session, job, plan))
    specs = plan_trials(chosen, spec, job.hyperparameters, plan.config, control)
    trials = []
    for trial in specs:
        # The labels-only control has no use for unlabelled rows (they teach only through
        # the teacher's outputs): it trains on the labelled rows alone, at a fraction of the cost.
        unlabeled = None if trial.recipe == NO_DISTILL else job.unlabeled_dataset_id
        request = JobRequest(
            kind="distill",
            train_dataset=job.train_dataset_id,
            tuning_dataset=job.tuning_dataset_id,
            teacher_model=job.teacher_model_id,
            unlabeled_dataset=unlabeled,
            label=job.label,
            text_columns=list(job.text_columns),
            hyperparameters=trial.hyperparameters,
            accelerator=job.accelerator,
        )
        # Checked at submit (students, datasets, teacher, keys); planned as any distill job.
        trial_plan, _ = _plan(session, runtime.store, request, LOCAL_CALLER, None)
        trials.append(
            Job(
                kind="distill",
                train_dataset_id=job.train_dataset_id,
                tuning_dataset_id=job.tuning_dataset_id,
                unlabeled_dataset_id=unlabeled,
                teacher_model_id=job.teacher_model_id,
                label=trial_plan.label,
                text_columns=trial_plan.text_columns,
                hyperparameters=dict(trial.hyperparameters),
                plan=trial_plan.to_json(),
                accelerator=job.accelerator,
                owner=job.owner,
                metrics={"trial": trial.to_json()},
            )
        )
    start = job.started_at or utcnow()
    job.metrics = {
        **job.metrics,
        "auto": {**job.metrics["auto"], "deadline": deadline_after(start, spec)},
    }
    session.commit()
    if not lifecycle.start_trials(session, job.id, attempt, trials, names=[t.name for t in specs]):
        # Another attempt owns the search now, or it was cancelled: check which.
        if lifecycle.check_stop(session, job.id, attempt):
            raise TrainingCancelled("cancelled while planning the search")
        raise lifecycle.Superseded("the search moved on while it was planned")
    for trial_job in trials:
        try:
            send_job(session, celery, trial_job, runtime.settings.task_queue)
        except Exception:  # the reaper re-sends a queued trial whose message was lost
            log.warning("could not send trial %s; the reaper will", trial_job.id, exc_info=True)
