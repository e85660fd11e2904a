r"""The job state machine: every change of a job's status, each with its event.

```
queued --claim--> running --finish--> succeeded | failed | cancelled
  |                 |  \--requeue_lost (heartbeat stale, attempts left)--> queued
  |                 \----fail_lost (heartbeat stale, no attempts left)---> failed | cancelled
  \--cancel--> cancelled          running --cancel--> (flagged; the worker stops at its check)
```

An auto-distill search (domain/auto_distill.py) is a job too: claimed and heartbeated like any
while it plans (phase "planning"), then `start_trials` queues its trials as child jobs and
leaves it running in phase "trials", owned by no worker and beating no heart (the reaper leaves
it alone), until `finish_search` ends it once its trials have ended.

Every transition is one compare-and-set UPDATE on the job row (its status, and for a running
job the attempt that owns it), so two processes racing for one job cannot both win: the loser
sees False (or None) and leaves the row alone. Each winner records its event in the same
commit. Nothing here sends queue messages or trains; the API, the worker and the reaper call
these functions and do their own side of the work.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Update, select, update
from sqlalchemy.orm import Session

from domain.orm import Job, JobEvent, utcnow
from domain.status import TERMINAL_STATUSES, JobStatus

__all__ = [
    "TERMINAL_STATUSES",
    "JobStatus",
    "Superseded",
    "add_event",
    "cancel",
    "check_stop",
    "claim",
    "fail_lost",
    "fail_unqueued",
    "finish",
    "finish_search",
    "heartbeat",
    "mark_sent",
    "queue",
    "requeue_lost",
    "start_trials",
    "touch_search",
]

# The phases of an auto-distill search (Job.phase; NULL on every other job).
PLANNING, TRIALS, DONE = "planning", "trials", "done"


class Superseded(Exception):
    """The job is no longer this attempt's (the reaper gave it to another, or it ended)."""


def add_event(session: Session, job_id: str, kind: str, message: str, **data: Any) -> None:
    session.add(JobEvent(job_id=job_id, kind=kind, message=message, data=data))


def _won(session: Session, statement: Update) -> bool:
    return bool(cast(CursorResult[Any], session.execute(statement)).rowcount)


def _owned(job_id: str, attempt: int) -> tuple[Any, ...]:
    return (Job.id == job_id, Job.status == JobStatus.RUNNING, Job.attempt == attempt)


def queue(session: Session, job: Job) -> Job:
    """A new job row, queued, with its first event; committed (its message is sent after)."""
    job.status = JobStatus.QUEUED
    session.add(job)
    session.flush()
    add_event(session, job.id, "queued", f"{job.kind} job queued")
    session.commit()
    return job


def mark_sent(session: Session, job: Job) -> None:
    """Its message is (about to be) on the queue: the reaper re-sends it if never claimed."""
    job.enqueued_at = utcnow()
    session.commit()


def fail_unqueued(session: Session, job: Job, reason: str) -> None:
    """The message could not be sent (broker down): the job ends instead of never running."""
    if _won(
        session,
        update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.QUEUED)
        .values(
            status=JobStatus.FAILED,
            error_code="internal",
            error_message=f"the job could not be queued: {reason}",
            finished_at=utcnow(),
        ),
    ):
        add_event(session, job.id, JobStatus.FAILED, "the job could not be queued")
    session.commit()
    session.refresh(job)


def claim(session: Session, job_id: str, worker_name: str) -> int | None:
    """queued -> running; of two deliveries of one message, one wins.

    Returns the attempt number this worker now owns, or None if the job was not queued."""
    now = utcnow()
    won = _won(
        session,
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(
            status=JobStatus.RUNNING,
            attempt=Job.attempt + 1,
            worker=worker_name,
            started_at=now,
            heartbeat_at=now,
            cancel_requested=False,
        ),
    )
    if not won:
        session.commit()
        return None
    attempt = session.scalar(select(Job.attempt).where(Job.id == job_id))
    assert attempt is not None
    add_event(
        session,
        job_id,
        "claimed",
        f"attempt {attempt} on {worker_name}",
        attempt=attempt,
        worker=worker_name,
    )
    session.commit()
    return attempt


def heartbeat(session: Session, job_id: str, attempt: int) -> bool:
    """Stamp heartbeat_at while this attempt owns the job; False once it does not."""
    beat = _won(session, update(Job).where(*_owned(job_id, attempt)).values(heartbeat_at=utcnow()))
    session.commit()
    return beat


def check_stop(session: Session, job_id: str, attempt: int) -> bool:
    """Whether the job was asked to cancel; raises `Superseded` when this attempt lost it."""
    status, owner, cancel_requested = session.execute(
        select(Job.status, Job.attempt, Job.cancel_requested).where(Job.id == job_id)
    ).one()
    if status != JobStatus.RUNNING or owner != attempt:
        raise Superseded(f"job is {status} at attempt {owner}; this was attempt {attempt}")
    return bool(cancel_requested)


def finish(
    session: Session,
    job_id: str,
    attempt: int,
    status: JobStatus,
    *,
    code: str | None = None,
    message: str | None = None,
    values: dict[str, Any] | None = None,
) -> bool:
    """running -> `status` (terminal), only while this attempt still owns the job."""
    assert status.is_terminal, status
    owned = _won(
        session,
        update(Job)
        .where(*_owned(job_id, attempt))
        .values(
            status=status,
            error_code=code,
            error_message=message,
            finished_at=utcnow(),
            **(values or {}),
        ),
    )
    if owned:
        add_event(session, job_id, status, message or status, attempt=attempt)
    session.commit()
    return owned


def cancel(session: Session, job_id: str) -> str | None:
    """Idempotent: queued -> cancelled ("cancelled"); running -> flagged for the worker's next
    check ("flagged"); anything else, or already flagged, is left as it is (None)."""
    if _won(
        session,
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(
            status=JobStatus.CANCELLED,
            error_code="cancelled",
            error_message="cancelled by request",
            finished_at=utcnow(),
            cancel_requested=True,
        ),
    ):
        add_event(session, job_id, JobStatus.CANCELLED, "cancelled before it ran")
        outcome: str | None = "cancelled"
    elif _won(
        session,
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.cancel_requested.is_(False))
        .values(cancel_requested=True),
    ):
        add_event(session, job_id, "cancel_requested", "the worker stops at its next step check")
        outcome = "flagged"
    else:
        outcome = None
    session.commit()
    return outcome


def _lost(job: Job, stale_before: datetime) -> tuple[Any, ...]:
    # A search waiting on its trials has no worker and no heartbeat: it is not lost.
    return (
        *_owned(job.id, job.attempt),
        Job.heartbeat_at < stale_before,
        Job.phase.is_distinct_from(TRIALS),
    )


def _silent_for(job: Job, now: datetime) -> int | None:
    return round((now - job.heartbeat_at).total_seconds()) if job.heartbeat_at else None


def requeue_lost(session: Session, job: Job, stale_before: datetime, max_attempts: int) -> bool:
    """running (heartbeat older than `stale_before`) -> queued, for the next attempt to resume
    from the last checkpoint; False when the job moved on, or beat again, meanwhile."""
    if not _won(
        session, update(Job).where(*_lost(job, stale_before)).values(status=JobStatus.QUEUED)
    ):
        session.commit()
        return False
    add_event(
        session,
        job.id,
        "retried",
        f"worker {job.worker} silent for {_silent_for(job, utcnow())} s; attempt "
        f"{job.attempt + 1} of {max_attempts} will resume from the last checkpoint",
        lost_attempt=job.attempt,
        worker=job.worker,
    )
    session.commit()
    return True


def fail_lost(session: Session, job: Job, stale_before: datetime, max_attempts: int) -> bool:
    """running (heartbeat stale, no attempts left) -> failed `worker_lost`, or cancelled when
    a cancel was asked for; False when the job moved on, or beat again, meanwhile."""
    now = utcnow()
    status, code = (
        (JobStatus.CANCELLED, "cancelled")
        if job.cancel_requested
        else (JobStatus.FAILED, "worker_lost")
    )
    message = (
        f"worker {job.worker} stopped answering (silent for {_silent_for(job, now)} s) on "
        f"attempt {job.attempt} of {max_attempts}"
    )
    won = _won(
        session,
        update(Job)
        .where(*_lost(job, stale_before))
        .values(status=status, error_code=code, error_message=message, finished_at=now),
    )
    if won:
        add_event(session, job.id, status, message, attempt=job.attempt, code=code)
    session.commit()
    return won


def start_trials(
    session: Session, job_id: str, attempt: int, trials: list[Job], **data: Any
) -> bool:
    """planning -> trials: the search's trial jobs are created queued, in the same commit that
    hands the search from the planning attempt to its trials (so a lost planner leaves either
    no trials or all of them). False, and nothing created, when the attempt lost the job or a
    cancel was asked for meanwhile."""
    now = utcnow()
    if not _won(
        session,
        update(Job)
        .where(
            *_owned(job_id, attempt),
            Job.phase == PLANNING,
            Job.cancel_requested.is_(False),
        )
        .values(phase=TRIALS, heartbeat_at=now),
    ):
        session.rollback()
        return False
    for trial in trials:
        trial.status, trial.parent_job_id, trial.enqueued_at = JobStatus.QUEUED, job_id, now
        session.add(trial)
    session.flush()
    for trial in trials:
        add_event(session, trial.id, "queued", f"trial of {job_id} queued", parent=job_id)
    add_event(
        session,
        job_id,
        "trials_queued",
        f"{len(trials)} trials queued",
        trials=[t.id for t in trials],
        **data,
    )
    session.commit()
    return True


def touch_search(session: Session, job_id: str, progress: float) -> None:
    """A waiting search was looked at: stamp when, and how far its trials are."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.phase == TRIALS)
        .values(heartbeat_at=utcnow(), progress=progress)
    )
    session.commit()


def finish_search(
    session: Session,
    job_id: str,
    status: JobStatus,
    *,
    code: str | None = None,
    message: str | None = None,
    values: dict[str, Any] | None = None,
) -> bool:
    """trials -> `status` (terminal): of any number of processes that saw the last trial end,
    one wins."""
    assert status.is_terminal, status
    won = _won(
        session,
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.phase == TRIALS)
        .values(
            status=status,
            phase=DONE,
            error_code=code,
            error_message=message,
            finished_at=utcnow(),
            **(values or {}),
        ),
    )
    if won:
        add_event(session, job_id, status, message or status)
    session.commit()
    return won
