r"""Auto-distill searches: a parent job whose trials are ordinary distill jobs on the same queue.

```
submit: queued (phase planning)
  --claim--> running/planning   a worker measures every candidate's CPU latency, prunes,
                                 plans the trials (heartbeat, cancel checks, requeue if lost)
  --start_trials--> running/trials   trials created queued in the same commit; the search
                                 holds no worker and no heartbeat; the reaper leaves it alone
  --advance (last trial ended)--> succeeded | failed | cancelled  (phase done)
```

`advance` is the only step that moves a waiting search, and it is idempotent: it reads the
trials, and when every one has ended, a compare-and-set (lifecycle.finish_search) ends the
search with its leaderboard; of any number of callers one wins. It is called by the worker
that ends a trial (right after the trial's own finish), by the API after a cancel, and by the
reaper for any waiting search whose trials have all ended (a worker that died between a
trial's finish and its advance) or whose time limit has passed. A trial is an ordinary job:
claimed by compare-and-set, heartbeated, resumed from its checkpoint by the next attempt when
its worker is lost; a lost worker costs one trial's progress, never the search.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from distillery.auto import NO_DISTILL, AutoError, Budget, SearchSpec, resolve_search
from distillery.hyperparams import TEACHER_CHECKPOINT
from distillery.leaderboard import leaderboard
from distillery.plan import CHECKPOINT_KEY, LAYERS_KEY
from domain import lifecycle
from domain.errors import Invalid
from domain.orm import Job, JobEvent, Model, ModelVariant, utcnow
from domain.status import TERMINAL_STATUSES, JobStatus

log = logging.getLogger(__name__)

AUTO_KIND = "auto_distill"
# Keys the search sets per trial; the request's hyperparameters apply to every trial.
SEARCH_KEYS = (CHECKPOINT_KEY, LAYERS_KEY)


def search_spec(auto: dict[str, Any] | None) -> SearchSpec:
    """The request's `auto` settings resolved against their preset; Invalid names the field."""
    raw = dict(auto or {})
    known = (
        "presets",
        "max_latency_ms_per_row",
        "latency_mode",
        "min_speedup",
        "max_size_mb",
        "time_limit",
        "max_trials",
        "students",
        "int8",
        "no_distill",
        "recipes",
        "scheduler",
    )
    unknown = [key for key in raw if key not in known]
    if unknown:
        raise Invalid(
            "Invalid search", f"unknown setting(s) {', '.join(unknown)}", field=f"auto.{unknown[0]}"
        )
    try:
        return resolve_search(
            raw.get("presets"),
            max_latency_ms_per_row=raw.get("max_latency_ms_per_row"),
            latency_mode=raw.get("latency_mode") or "batched",
            min_speedup=raw.get("min_speedup"),
            max_size_mb=raw.get("max_size_mb"),
            time_limit=raw.get("time_limit"),
            max_trials=raw.get("max_trials"),
            students=raw.get("students"),
            int8=raw.get("int8"),
            no_distill=raw.get("no_distill"),
            recipes=raw.get("recipes"),
            scheduler=raw.get("scheduler"),
        )
    except AutoError as exc:
        raise Invalid("Invalid search", str(exc), field=exc.field) from None


def check_search_request(
    hyperparameters: dict[str, Any], tuning_dataset: str | None, teacher_model: str | None
) -> None:
    """What a search needs before its plan is built: a teacher, tuning rows, no student keys."""
    if teacher_model is None:
        raise Invalid(
            "Teacher required", "an auto_distill job distils a teacher_model", field="teacher_model"
        )
    if tuning_dataset is None:
        raise Invalid(
            "Tuning rows required",
            "an auto_distill job ranks its trials on tuning_dataset; name one (labelled rows the "
            "students never train on)",
            field="tuning_dataset",
        )
    for key in SEARCH_KEYS:
        if key in hyperparameters:
            raise Invalid(
                "Set by the search",
                f"{key} is what auto-distill searches; name extra students in auto.students",
                field=f"hyperparameters.{key}",
            )


def planning_hyperparameters(hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """The request's keys with a cut of the teacher as student: what the submit-time plan checks
    (every trial adds only student and distiller keys to these)."""
    return {**hyperparameters, CHECKPOINT_KEY: TEACHER_CHECKPOINT}


def children(session: Session, parent_id: str) -> list[Job]:
    return list(
        session.scalars(
            select(Job).where(Job.parent_job_id == parent_id).order_by(Job.created_at, Job.id)
        )
    )


def cancel_search(session: Session, parent: Job) -> None:
    """Every trial cancelled (queued ones at once, running ones at their next check), then the
    search advanced: it ends cancelled as soon as its last trial has."""
    for child in children(session, parent.id):
        lifecycle.cancel(session, child.id)
    advance(session, parent.id)


def _deadline(parent: Job) -> datetime | None:
    raw = (parent.metrics or {}).get("auto", {}).get("deadline")
    return datetime.fromisoformat(raw) if raw else None


@dataclass(frozen=True)
class TrialLimits:
    """What a search asks of one of its trials while it trains."""

    # The search's time_limit: training ends then, the best weights so far kept.
    deadline: datetime | None
    # Early stopping against the search's other trials (distillery/halving.py); never for the
    # no-distill control, which is there to be worse.
    halving: bool


def trial_limits(session: Session, job: Job) -> TrialLimits | None:
    """The limits on a search's trial; None for a job that is no trial."""
    if job.parent_job_id is None:
        return None
    parent = session.get(Job, job.parent_job_id)
    if parent is None:
        return None
    auto = (parent.plan or {}).get("auto")
    scheduler = SearchSpec.from_json(auto).scheduler if auto else "FIFO"
    control = (job.metrics or {}).get("trial", {}).get("recipe") == NO_DISTILL
    return TrialLimits(_deadline(parent), scheduler == "ASHA" and not control)


def halving_state(job: Job) -> dict[str, Any]:
    """A trial's early-stopping record: its score at each rung, and the rung it stopped at."""
    return dict((job.metrics or {}).get("halving") or {})


def rung_key(rung: float) -> str:
    return f"{rung:g}"


def rung_scores(session: Session, job: Job, rung: float) -> list[float]:
    """The tuning scores the search's other trials recorded at `rung` (a fresh read: they are
    written by other workers)."""
    key = rung_key(rung)
    rows = session.execute(
        select(Job.metrics).where(Job.parent_job_id == job.parent_job_id, Job.id != job.id)
    ).scalars()
    scores = [((metrics or {}).get("halving") or {}).get("rungs", {}).get(key) for metrics in rows]
    return [float(score) for score in scores if score is not None]


def needs_advance(session: Session, parent: Job, now: datetime) -> bool:
    """Whether a waiting search has something to do: every trial ended, or its time is up
    with trials still queued."""
    kids = children(session, parent.id)
    if all(child.status in TERMINAL_STATUSES for child in kids):
        return True
    deadline = _deadline(parent)
    return (
        deadline is not None
        and now >= deadline
        and any(child.status == JobStatus.QUEUED for child in kids)
    )


def waiting_searches(session: Session) -> list[Job]:
    return list(
        session.scalars(
            select(Job).where(Job.status == JobStatus.RUNNING, Job.phase == lifecycle.TRIALS)
        )
    )


def advance(session: Session, parent_id: str) -> str:
    """Move a waiting search on; safe to call any number of times from anywhere.

    Returns what it did: "not_waiting" (planning, or already ended), "waiting" (trials still
    running), or the status the search ended with."""
    session.expire_all()
    parent = session.get(Job, parent_id)
    if parent is None or parent.status != JobStatus.RUNNING or parent.phase != lifecycle.TRIALS:
        return "not_waiting"
    kids = children(session, parent_id)
    deadline = _deadline(parent)
    if deadline is not None and utcnow() >= deadline:
        # The compute budget is spent: trials not started yet will not be; running ones end.
        for child in kids:
            if child.status == JobStatus.QUEUED and lifecycle.cancel(session, child.id):
                lifecycle.add_event(
                    session, child.id, "time_limit", "the search's time_limit passed"
                )
                session.commit()
    if parent.cancel_requested:
        for child in kids:
            if child.status not in TERMINAL_STATUSES:
                lifecycle.cancel(session, child.id)
    session.expire_all()
    kids = children(session, parent_id)
    ended = sum(child.status in TERMINAL_STATUSES for child in kids)
    if ended < len(kids):
        lifecycle.touch_search(session, parent_id, round(ended / max(1, len(kids)), 4))
        return "waiting"
    return _finish(session, parent, kids)


def _finish(session: Session, parent: Job, kids: list[Job]) -> str:
    spec = SearchSpec.from_json((parent.plan or {})["auto"])
    probe = (parent.metrics or {}).get("auto", {}).get("teacher_latency")
    board = leaderboard(trial_records(session, kids), spec.budget, probe)
    best = board["best"]
    summary = {
        "best": best,
        "frontier": board["frontier"],
        "trials": len(kids),
        "succeeded": sum(child.status == JobStatus.SUCCEEDED for child in kids),
        "search_seconds": sum(
            r.get("cost_seconds") or 0.0 for r in board["rows"] if r["variant"] == "float"
        ),
    }
    metrics = {**parent.metrics, "leaderboard": summary}
    if parent.cancel_requested:
        status, code, message = JobStatus.CANCELLED, "cancelled", "cancelled by request"
        values: dict[str, Any] = {"metrics": metrics}
    elif best is None:
        succeeded = summary["succeeded"]
        status, code = JobStatus.FAILED, "budget_not_met" if succeeded else "trials_failed"
        message = (
            f"no trial's measured student meets the budget ({spec.budget.describe()}); "
            f"{succeeded} of {len(kids)} trials succeeded (see its leaderboard)"
        )
        values = {"metrics": metrics}
    else:
        status, code = JobStatus.SUCCEEDED, None
        message = (
            f"model {best['model']} ({best['name']}): tuning accuracy "
            f"{best['tuning_accuracy']:.4f}, {best['latency_ms_per_row']} ms/row, "
            f"{best['speedup']}x the teacher"
        )
        values = {"metrics": metrics, "result_model_id": best["model"], "progress": 1.0}
    if not lifecycle.finish_search(
        session, parent.id, status, code=code, message=message, values=values
    ):
        return "not_waiting"
    if status == JobStatus.SUCCEEDED and best is not None and best["variant"] != "float":
        # The search registers its best as served: the int8 variant when that is what fits.
        model = session.get(Model, best["model"])
        if model is not None:
            model.default_variant = best["variant"]
            session.commit()
    return str(status)


def trial_records(session: Session, kids: list[Job]) -> list[dict[str, Any]]:
    """Each trial as distillery.leaderboard.leaderboard reads it."""
    if not kids:
        return []
    ids = [child.id for child in kids]
    first_claims = dict(
        session.execute(
            select(JobEvent.job_id, func.min(JobEvent.at))
            .where(JobEvent.job_id.in_(ids), JobEvent.kind == "claimed")
            .group_by(JobEvent.job_id)
        ).all()
    )
    models = [child.result_model_id for child in kids if child.result_model_id]
    int8 = (
        {
            variant.model_id: variant.comparison
            for variant in session.scalars(
                select(ModelVariant).where(
                    ModelVariant.model_id.in_(models), ModelVariant.kind == "int8"
                )
            )
        }
        if models
        else {}
    )
    records = []
    for child in kids:
        started = first_claims.get(child.id)
        if started is not None and started.tzinfo is None:
            started = started.replace(tzinfo=child.created_at.tzinfo)
        cost = (
            round((child.finished_at - started).total_seconds(), 2)
            if started is not None and child.finished_at is not None
            else None
        )
        records.append(
            {
                "id": child.id,
                "status": child.status,
                "spec": (child.metrics or {}).get("trial", {}),
                "metrics": child.metrics,
                "int8": int8.get(child.result_model_id) if child.result_model_id else None,
                "cost_seconds": cost,
                "attempts": child.attempt,
                "worker": child.worker,
                "started_at": child.started_at.isoformat() if child.started_at else None,
                "finished_at": child.finished_at.isoformat() if child.finished_at else None,
                "model": child.result_model_id,
                "error": {"code": child.error_code, "message": child.error_message}
                if child.error_code
                else None,
            }
        )
    return records


def search_leaderboard(session: Session, job: Job) -> dict[str, Any]:
    """A search's leaderboard as it stands (it fills in while the trials run)."""
    if job.kind != AUTO_KIND:
        raise Invalid("No leaderboard", "only auto_distill jobs have a leaderboard", field="job_id")
    auto = (job.plan or {}).get("auto") or {}
    spec = SearchSpec.from_json(auto) if auto else None
    budget = spec.budget if spec else Budget()
    kids = children(session, job.id)
    search = (job.metrics or {}).get("auto", {})
    board = leaderboard(trial_records(session, kids), budget, search.get("teacher_latency"))
    return {
        "job": job.id,
        "status": job.status,
        "phase": job.phase,
        "presets": spec.presets if spec else None,
        "model": job.result_model_id,
        **board,
        "teacher_probe": search.get("teacher_latency"),
        "candidates": search.get("probes", []),
        "time_limit": spec.time_limit if spec else None,
        "max_trials": spec.max_trials if spec else None,
    }


def deadline_after(start: datetime, spec: SearchSpec) -> str | None:
    return (start + timedelta(seconds=spec.time_limit)).isoformat() if spec.time_limit else None
