"""The auto-distill search as a state machine on a real database, without workers: trials
queued atomically, a waiting search never taken for lost, `advance` idempotent, the reaper
finishing a search whose last advance was lost, a cancel taking the trials with it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from distillery.auto import resolve_search
from domain import lifecycle
from domain.auth import LOCAL_CALLER
from domain.auto_distill import AUTO_KIND, advance, children, trial_deadline
from domain.config import Settings
from domain.db import make_engine, make_session_factory
from domain.jobs import cancel_job
from domain.orm import Job, utcnow
from domain.queue import make_celery
from domain.storage import make_store
from tests.factories import dataset_row, job_row
from tests.unit.test_auto import trial
from worker.progress import JobCallbacks
from worker.reaper import reap_once


@pytest.fixture
def session(sqlite_settings: Settings):
    factory = make_session_factory(make_engine(sqlite_settings.resolved_database_url()))
    with factory() as session:
        yield session


def kind_row(dataset_id: str, kind: str, **values: object) -> Job:
    job = job_row(dataset_id, **values)
    job.kind = kind
    return job


def planning_search(session: Session) -> tuple[Job, str]:
    dataset = dataset_row()
    session.add(dataset)
    session.flush()
    spec = resolve_search("fast_inference", max_latency_ms_per_row=5.0)
    search = kind_row(
        dataset.id,
        AUTO_KIND,
        status="running",
        phase=lifecycle.PLANNING,
        attempt=1,
        worker="w@host",
        heartbeat_at=utcnow(),
        plan={"auto": spec.to_json()},
    )
    session.add(search)
    session.commit()
    return search, dataset.id


def queue_trials(session: Session, count: int = 2) -> Job:
    search, dataset_id = planning_search(session)
    trials = [kind_row(dataset_id, "distill") for _ in range(count)]
    assert lifecycle.start_trials(session, search.id, 1, trials)
    return search


def succeed(session: Session, job: Job, accuracy: float, ms: float) -> None:
    record = trial(job.id, accuracy, ms)
    job.metrics = {**record["metrics"], "trial": record["spec"]}
    job.status, job.result_model_id, job.finished_at = "succeeded", f"mdl_{job.id}", utcnow()
    session.commit()


def test_trials_are_queued_with_the_search_in_one_commit(session: Session) -> None:
    search = queue_trials(session)
    session.refresh(search)
    assert search.phase == "trials" and search.status == "running"
    trials = children(session, search.id)
    assert [t.status for t in trials] == ["queued", "queued"]
    assert all(t.enqueued_at is not None for t in trials)
    # The planning attempt cannot queue them twice.
    assert not lifecycle.start_trials(session, search.id, 1, [])


def test_a_cancel_asked_while_planning_wins_over_the_trials(session: Session) -> None:
    search, dataset_id = planning_search(session)
    assert lifecycle.cancel(session, search.id) == "flagged"
    assert not lifecycle.start_trials(session, search.id, 1, [job_row(dataset_id)])
    assert children(session, search.id) == []


def test_a_waiting_search_is_not_lost_and_the_reaper_finishes_it(
    session: Session, sqlite_settings: Settings
) -> None:
    search = queue_trials(session)
    search.heartbeat_at = utcnow() - timedelta(hours=1)
    session.commit()
    celery = make_celery(sqlite_settings)
    outcome = reap_once(session, celery, sqlite_settings)
    assert outcome["requeued"] == [] and outcome["failed"] == []
    session.refresh(search)
    assert search.status == "running" and search.phase == "trials"

    first, second = children(session, search.id)
    succeed(session, first, 0.8, 2.0)
    assert advance(session, search.id) == "waiting"
    succeed(session, second, 0.85, 20.0)  # more accurate, but misses the 5 ms budget
    # The worker that ended the last trial died before advancing: the reaper does it.
    assert reap_once(session, celery, sqlite_settings)["advanced"] == [search.id]
    session.refresh(search)
    assert search.status == "succeeded" and search.phase == "done"
    assert search.result_model_id == f"mdl_{first.id}"
    assert search.metrics["leaderboard"]["best"]["trial"] == first.id
    # Idempotent: later advances change nothing.
    assert advance(session, search.id) == "not_waiting"


def test_no_trial_within_budget_fails_the_search(session: Session) -> None:
    search = queue_trials(session, count=1)
    (only,) = children(session, search.id)
    succeed(session, only, 0.9, 50.0)
    assert advance(session, search.id) == "failed"
    session.refresh(search)
    assert search.error_code == "budget_not_met"


def test_cancelling_a_search_cancels_every_trial(session: Session) -> None:
    search = queue_trials(session)
    first, _ = children(session, search.id)
    assert lifecycle.claim(session, first.id, "w2@host") == 1
    cancel_job(session, search.id, LOCAL_CALLER)
    statuses = {t.id: t.status for t in children(session, search.id)}
    # The queued trial ended at once; the running one is flagged and the search waits for it.
    assert sorted(statuses.values()) == ["cancelled", "running"]
    session.refresh(first)
    assert first.cancel_requested
    session.refresh(search)
    assert search.status == "running"
    lifecycle.finish(session, first.id, 1, lifecycle.JobStatus.CANCELLED, code="cancelled")
    assert advance(session, search.id) == "cancelled"


def test_a_planner_lost_mid_probe_is_requeued_like_any_job(
    session: Session, sqlite_settings: Settings
) -> None:
    search, _ = planning_search(session)
    search.heartbeat_at = utcnow() - timedelta(hours=1)
    session.commit()
    assert reap_once(session, make_celery(sqlite_settings), sqlite_settings)["requeued"] == [
        search.id
    ]
    session.refresh(search)
    assert search.status == "queued" and search.phase == "planning"


def test_the_time_limit_wraps_up_running_trials_with_one_event(
    session: Session, sqlite_settings: Settings, tmp_path: Path
) -> None:
    search = queue_trials(session)
    first, _ = children(session, search.id)
    assert trial_deadline(session, first) is None  # a search without a time_limit
    assert trial_deadline(session, search) is None  # not a trial
    passed = utcnow() - timedelta(seconds=1)
    search.metrics = {"auto": {"deadline": passed.isoformat()}}
    session.commit()
    assert trial_deadline(session, first) == passed
    callbacks = JobCallbacks(
        session, first, 1, make_store(sqlite_settings), tmp_path, trial_deadline(session, first)
    )
    assert callbacks.should_wrap_up() and callbacks.should_wrap_up()
    session.refresh(first)
    assert [e.kind for e in first.events].count("time_limit") == 1
    ahead = JobCallbacks(
        session, first, 1, make_store(sqlite_settings), tmp_path, utcnow() + timedelta(hours=1)
    )
    assert not ahead.should_wrap_up()


def test_the_time_limit_cancels_trials_not_started(
    session: Session, sqlite_settings: Settings
) -> None:
    search = queue_trials(session)
    first, second = children(session, search.id)
    assert lifecycle.claim(session, first.id, "w2@host") == 1
    search.metrics = {"auto": {"deadline": (utcnow() - timedelta(seconds=1)).isoformat()}}
    session.commit()
    reap_once(session, make_celery(sqlite_settings), sqlite_settings)
    session.refresh(second)
    session.refresh(first)
    assert second.status == "cancelled" and first.status == "running"
    assert "time_limit" in [e.kind for e in second.events]
    lifecycle.finish(session, first.id, 1, lifecycle.JobStatus.FAILED, code="internal")
    assert advance(session, search.id) == "failed"
    session.refresh(search)
    assert search.error_code == "trials_failed"
