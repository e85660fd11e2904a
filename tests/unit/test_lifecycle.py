"""Every job transition (domain/lifecycle.py), in-process on real SQLite and PostgreSQL: the
winning side of each compare-and-set, its event, and the losing side, which changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from domain import lifecycle
from domain.config import Settings
from domain.lifecycle import JobStatus
from domain.orm import Job, JobEvent, utcnow
from domain.runtime import make_runtime
from tests.factories import dataset_row, job_row

MAX_ATTEMPTS = 3


@pytest.fixture(params=["sqlite", "postgres"])
def session(request: pytest.FixtureRequest) -> Iterator[Session]:
    fixture = "sqlite_settings" if request.param == "sqlite" else "postgres_redis_settings"
    settings: Settings = request.getfixturevalue(fixture)
    runtime = make_runtime(settings)
    with runtime.sessions() as opened:
        yield opened
    runtime.engine.dispose()


def new_job(session: Session) -> Job:
    dataset = dataset_row()
    session.add(dataset)
    session.flush()
    return lifecycle.queue(session, job_row(dataset.id))


def events(session: Session, job: Job) -> list[str]:
    return list(
        session.scalars(
            select(JobEvent.kind).where(JobEvent.job_id == job.id).order_by(JobEvent.id)
        )
    )


def reread(session: Session, job: Job) -> Job:
    session.expire_all()
    fresh = session.get(Job, job.id)
    assert fresh is not None
    return fresh


def running_job(session: Session) -> tuple[Job, int]:
    job = new_job(session)
    attempt = lifecycle.claim(session, job.id, "w1@host")
    assert attempt == 1
    return reread(session, job), attempt


def make_silent(session: Session, job: Job, minutes: int = 10) -> Job:
    job.heartbeat_at = utcnow() - timedelta(minutes=minutes)
    session.commit()
    return job


def test_queue_records_a_queued_row_and_its_event(session: Session) -> None:
    job = new_job(session)
    assert reread(session, job).status == JobStatus.QUEUED
    assert events(session, job) == ["queued"]
    lifecycle.mark_sent(session, job)
    assert reread(session, job).enqueued_at is not None


def test_claim_once_of_two_deliveries(session: Session) -> None:
    job = new_job(session)
    assert lifecycle.claim(session, job.id, "w1@host") == 1
    assert lifecycle.claim(session, job.id, "w2@host") is None  # the losing delivery
    claimed = reread(session, job)
    assert claimed.status == JobStatus.RUNNING and claimed.worker == "w1@host"
    assert claimed.attempt == 1 and claimed.heartbeat_at is not None
    assert events(session, job) == ["queued", "claimed"]


def test_heartbeat_only_while_the_attempt_owns_the_job(session: Session) -> None:
    job, attempt = running_job(session)
    make_silent(session, job)
    assert lifecycle.heartbeat(session, job.id, attempt)
    assert reread(session, job).heartbeat_at > utcnow() - timedelta(minutes=1)
    make_silent(session, job)
    assert not lifecycle.heartbeat(session, job.id, attempt + 1)  # not this attempt's
    assert reread(session, job).heartbeat_at < utcnow() - timedelta(minutes=5)


def test_stop_check_reads_the_cancel_flag_and_notices_a_lost_job(session: Session) -> None:
    job, attempt = running_job(session)
    assert lifecycle.check_stop(session, job.id, attempt) is False
    assert lifecycle.cancel(session, job.id) == "flagged"
    assert lifecycle.check_stop(session, job.id, attempt) is True
    with pytest.raises(lifecycle.Superseded):
        lifecycle.check_stop(session, job.id, attempt + 1)


def test_finish_only_by_the_owning_attempt(session: Session) -> None:
    job, attempt = running_job(session)
    assert not lifecycle.finish(session, job.id, attempt + 1, JobStatus.SUCCEEDED)
    assert reread(session, job).status == JobStatus.RUNNING
    assert lifecycle.finish(
        session, job.id, attempt, JobStatus.FAILED, code="invalid_input", message="bad table"
    )
    failed = reread(session, job)
    assert failed.status == JobStatus.FAILED and failed.error_code == "invalid_input"
    assert failed.finished_at is not None
    # Finished: a second finish (a late duplicate) loses and leaves the row as it was.
    assert not lifecycle.finish(session, job.id, attempt, JobStatus.SUCCEEDED)
    assert reread(session, job).status == JobStatus.FAILED
    assert events(session, job) == ["queued", "claimed", "failed"]


def test_finish_succeeded_sets_the_given_values(session: Session) -> None:
    job, attempt = running_job(session)
    assert lifecycle.finish(
        session,
        job.id,
        attempt,
        JobStatus.SUCCEEDED,
        message="model mdl_x",
        values={"progress": 1.0, "result_model_id": "mdl_x"},
    )
    done = reread(session, job)
    assert done.status == JobStatus.SUCCEEDED and done.result_model_id == "mdl_x"


def test_cancel_a_queued_job_ends_it_and_a_finished_one_is_left_alone(session: Session) -> None:
    job = new_job(session)
    assert lifecycle.cancel(session, job.id) == "cancelled"
    cancelled = reread(session, job)
    assert cancelled.status == JobStatus.CANCELLED and cancelled.error_code == "cancelled"
    assert lifecycle.claim(session, job.id, "w1@host") is None  # a late delivery loses
    assert lifecycle.cancel(session, job.id) is None
    assert events(session, job) == ["queued", "cancelled"]


def test_cancel_a_running_job_flags_it_once(session: Session) -> None:
    job, _ = running_job(session)
    assert lifecycle.cancel(session, job.id) == "flagged"
    assert lifecycle.cancel(session, job.id) is None  # already flagged: no second event
    flagged = reread(session, job)
    assert flagged.status == JobStatus.RUNNING and flagged.cancel_requested
    assert events(session, job) == ["queued", "claimed", "cancel_requested"]


def test_requeue_lost_needs_a_stale_heartbeat_on_the_same_attempt(session: Session) -> None:
    job, attempt = running_job(session)
    stale_before = utcnow() - timedelta(minutes=2)
    # Heartbeat fresh: the worker is alive, the requeue loses.
    assert not lifecycle.requeue_lost(session, job, stale_before, MAX_ATTEMPTS)
    assert reread(session, job).status == JobStatus.RUNNING
    job = make_silent(session, job)
    assert lifecycle.requeue_lost(session, job, stale_before, MAX_ATTEMPTS)
    assert reread(session, job).status == JobStatus.QUEUED
    # The next attempt resumes; the old attempt's view of the job loses every later change.
    assert lifecycle.claim(session, job.id, "w2@host") == attempt + 1
    assert not lifecycle.finish(session, job.id, attempt, JobStatus.SUCCEEDED)
    with pytest.raises(lifecycle.Superseded):
        lifecycle.check_stop(session, job.id, attempt)
    assert events(session, job) == ["queued", "claimed", "retried", "claimed"]


def test_requeue_lost_loses_to_a_beat_that_came_in_between(session: Session) -> None:
    job, attempt = running_job(session)
    job = make_silent(session, job)
    seen = reread(session, job)  # the reaper's read
    assert lifecycle.heartbeat(session, job.id, attempt)  # the worker beats meanwhile
    stale_before = utcnow() - timedelta(minutes=2)
    assert not lifecycle.requeue_lost(session, seen, stale_before, MAX_ATTEMPTS)
    assert not lifecycle.fail_lost(session, seen, stale_before, MAX_ATTEMPTS)
    assert reread(session, job).status == JobStatus.RUNNING


def test_fail_lost_ends_the_job_as_worker_lost(session: Session) -> None:
    job, _ = running_job(session)
    job = make_silent(session, job)
    assert lifecycle.fail_lost(session, job, utcnow() - timedelta(minutes=2), MAX_ATTEMPTS)
    lost = reread(session, job)
    assert lost.status == JobStatus.FAILED and lost.error_code == "worker_lost"
    assert "w1@host" in (lost.error_message or "")
    assert events(session, job)[-1] == "failed"


def test_fail_lost_of_a_job_asked_to_cancel_ends_it_cancelled(session: Session) -> None:
    job, _ = running_job(session)
    assert lifecycle.cancel(session, job.id) == "flagged"
    job = make_silent(session, reread(session, job))
    assert lifecycle.fail_lost(session, job, utcnow() - timedelta(minutes=2), MAX_ATTEMPTS)
    assert reread(session, job).status == JobStatus.CANCELLED


def test_fail_unqueued_only_while_no_worker_has_claimed_it(session: Session) -> None:
    job = new_job(session)
    lifecycle.fail_unqueued(session, job, "broker down")
    assert job.status == JobStatus.FAILED and "broker down" in (job.error_message or "")
    claimed, _ = running_job(session)
    lifecycle.fail_unqueued(session, claimed, "broker down")  # loses: a worker has it
    assert reread(session, claimed).status == JobStatus.RUNNING
