"""The auto-distill search as a state machine on a real database, without workers: trials
queued atomically, a waiting search never taken for lost, `advance` idempotent, the reaper
finishing a search whose last advance was lost, a cancel taking the trials with it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from distillery.auto import NO_DISTILL, resolve_search
from distillery.halving import RUNGS
from domain import lifecycle
from domain.auth import LOCAL_CALLER
from domain.auto_distill import (
    AUTO_KIND,
    TrialLimits,
    advance,
    children,
    halving_state,
    trial_limits,
)
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
    limits = trial_limits(session, first)
    assert limits is not None and limits.deadline is None  # a search without a time_limit
    assert trial_limits(session, search) is None  # not a trial
    passed = utcnow() - timedelta(seconds=1)
    search.metrics = {"auto": {"deadline": passed.isoformat()}}
    session.commit()
    limits = trial_limits(session, first)
    assert limits is not None and limits.deadline == passed
    callbacks = JobCallbacks(session, first, 1, make_store(sqlite_settings), tmp_path, limits)
    assert callbacks.should_wrap_up() and callbacks.should_wrap_up()
    session.refresh(first)
    assert [e.kind for e in first.events].count("time_limit") == 1
    ahead = JobCallbacks(
        session,
        first,
        1,
        make_store(sqlite_settings),
        tmp_path,
        TrialLimits(utcnow() + timedelta(hours=1), halving=False),
    )
    assert not ahead.should_wrap_up()


def test_early_stopping_stops_a_trial_below_its_siblings_at_a_rung(
    session: Session, sqlite_settings: Settings, tmp_path: Path
) -> None:
    search = queue_trials(session, count=3)
    first, second, control = children(session, search.id)
    control.metrics = {"trial": {"recipe": NO_DISTILL}}
    session.commit()
    store = make_store(sqlite_settings)

    def running(job: Job) -> JobCallbacks:
        limits = trial_limits(session, job)
        assert limits is not None
        callbacks = JobCallbacks(session, job, 1, store, tmp_path / job.id, limits)
        callbacks.on_start(100, {"selection_metric": "accuracy", "device": "cpu"})
        return callbacks

    # The control is there to be worse: it is never ranked, and never ranks another.
    assert running(control).validation_fractions() == ()
    leader, follower = running(first), running(second)
    assert leader.validation_fractions() == follower.validation_fractions() == RUNGS
    leader.on_validation(25, 0.5, {"accuracy": 0.8}, 0.8)  # first at the rung: it goes on
    follower.on_validation(10, 0.2, {"accuracy": 0.9}, 0.9)  # no rung yet
    assert not follower.should_wrap_up()
    follower.on_validation(25, 0.5, {"accuracy": 0.6}, 0.9)  # its best so far, 0.9, is ahead
    assert not follower.should_wrap_up()
    leader.on_validation(50, 1.0, {"accuracy": 0.7}, 0.8)  # its best, 0.8, goes to rung 0.5
    assert not leader.should_wrap_up()
    follower.on_validation(50, 1.0, {"accuracy": 0.6}, 0.9)  # 0.9 again: still ahead
    assert not follower.should_wrap_up()

    third = kind_row(first.train_dataset_id, "distill", parent_job_id=search.id)
    session.add(third)
    session.commit()
    late = running(third)
    late.on_validation(30, 0.6, {"accuracy": 0.7}, 0.7)  # at rung 0.25, below the median of three
    assert late.should_wrap_up()
    session.refresh(third)
    stopped = [e for e in third.events if e.kind == "stopped_early"]
    assert len(stopped) == 1 and stopped[0].data["rung"] == 0.25
    assert halving_state(third) == {"rungs": {"0.25": 0.7}, "stopped_at": 0.25, "cutoff": 0.8}
    # An attempt that resumes the stopped trial stops again at once.
    assert JobCallbacks(
        session, third, 2, store, tmp_path, trial_limits(session, third)
    ).should_wrap_up()


def test_a_fifo_search_trains_every_trial_to_its_end(session: Session) -> None:
    search = queue_trials(session)
    search.plan = {"auto": resolve_search("fast_inference", scheduler="FIFO").to_json()}
    session.commit()
    limits = trial_limits(session, children(session, search.id)[0])
    assert limits is not None and not limits.halving


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
