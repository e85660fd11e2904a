"""The reaper's decisions, on a real database and broker, with the clock moved by hand."""

from __future__ import annotations

from datetime import timedelta

import pytest
from kombu import Connection

from domain.config import Settings
from domain.db import make_engine, make_session_factory
from domain.orm import JobEvent, utcnow
from domain.queue import make_celery
from tests.factories import dataset_row, job_row
from worker.reaper import reap_once


@pytest.fixture
def session_and_job(sqlite_settings: Settings):
    factory = make_session_factory(make_engine(sqlite_settings.resolved_database_url()))
    with factory() as session:
        dataset = dataset_row()
        session.add(dataset)
        session.flush()
        job = job_row(
            dataset.id,
            status="running",
            attempt=1,
            worker="gone@host",
            heartbeat_at=utcnow() - timedelta(minutes=10),
        )
        session.add(job)
        session.commit()
        yield session, job


def queued_messages(settings: Settings) -> int:
    with Connection(settings.resolved_broker_url()) as connection:
        return connection.SimpleQueue(settings.task_queue).qsize()


def test_silent_job_is_requeued_and_sent_again(sqlite_settings: Settings, session_and_job) -> None:
    session, job = session_and_job
    outcome = reap_once(session, make_celery(sqlite_settings), sqlite_settings)
    assert outcome["requeued"] == [job.id]
    session.refresh(job)
    assert job.status == "queued" and job.attempt == 1 and job.enqueued_at is not None
    assert queued_messages(sqlite_settings) == 1
    # A second pass finds nothing more to do.
    assert reap_once(session, make_celery(sqlite_settings), sqlite_settings) == {
        "requeued": [],
        "failed": [],
        "resent": [],
    }


def test_last_attempt_fails_with_worker_lost(sqlite_settings: Settings, session_and_job) -> None:
    session, job = session_and_job
    settings = sqlite_settings.model_copy(update={"max_attempts": 1})
    assert reap_once(session, make_celery(settings), settings)["failed"] == [job.id]
    session.refresh(job)
    assert (job.status, job.error_code) == ("failed", "worker_lost")
    assert "gone@host" in job.error_message
    kinds = [e.kind for e in session.query(JobEvent).filter_by(job_id=job.id)]
    assert kinds == ["failed"]


def test_live_heartbeat_is_left_alone(sqlite_settings: Settings, session_and_job) -> None:
    session, job = session_and_job
    job.heartbeat_at = utcnow()
    session.commit()
    assert reap_once(session, make_celery(sqlite_settings), sqlite_settings)["requeued"] == []
    session.refresh(job)
    assert job.status == "running"


def test_unclaimed_queued_job_is_sent_again(sqlite_settings: Settings, session_and_job) -> None:
    session, job = session_and_job
    job.status, job.enqueued_at = "queued", utcnow() - timedelta(hours=1)
    session.commit()
    assert reap_once(session, make_celery(sqlite_settings), sqlite_settings)["resent"] == [job.id]
    assert queued_messages(sqlite_settings) == 1
