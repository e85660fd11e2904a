"""The reaper: no job stays `running` after its worker is gone, and no queued job is forgotten.

- A running job whose heartbeat is older than `heartbeat_timeout_seconds` lost its worker: it is
  put back to `queued` and its message sent again while attempts remain (the next attempt
  resumes from the last checkpoint), else it ends `failed` with code `worker_lost`.
- A queued job whose message was sent more than `requeue_after_seconds` ago and never claimed
  has its message sent again (a broker restart without persistence loses messages).

Every change is a compare-and-set on the job row, so any number of reapers may run at once (each
worker runs one in its main process; `distillery reaper` runs one on its own).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from celery import Celery
from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.orm import Job, JobEvent, utcnow
from app.services.jobs import send_job

log = logging.getLogger("distillery.reaper")


def _changed(result: Any) -> bool:
    return bool(cast(CursorResult[Any], result).rowcount)


def reap_once(session: Session, celery: Celery, settings: Settings) -> dict[str, list[str]]:
    """One pass; returns the ids it re-queued, failed and re-sent."""
    now = utcnow()
    stale_before = now - timedelta(seconds=settings.heartbeat_timeout_seconds)
    outcome: dict[str, list[str]] = {"requeued": [], "failed": [], "resent": []}
    stale = session.scalars(
        select(Job).where(Job.status == "running", Job.heartbeat_at < stale_before)
    ).all()
    for job in stale:
        lost = (
            Job.id == job.id,
            Job.status == "running",
            Job.attempt == job.attempt,
            Job.heartbeat_at < stale_before,
        )
        silent_for = round((now - job.heartbeat_at).total_seconds()) if job.heartbeat_at else None
        if job.attempt < settings.max_attempts and not job.cancel_requested:
            if _changed(session.execute(update(Job).where(*lost).values(status="queued"))):
                session.add(
                    JobEvent(
                        job_id=job.id,
                        kind="retried",
                        message=f"worker {job.worker} silent for {silent_for} s; attempt "
                        f"{job.attempt + 1} of {settings.max_attempts} will resume from the "
                        "last checkpoint",
                        data={"lost_attempt": job.attempt, "worker": job.worker},
                    )
                )
                session.commit()
                send_job(session, celery, job, settings.task_queue)
                outcome["requeued"].append(job.id)
            continue
        status, code = (
            ("cancelled", "cancelled") if job.cancel_requested else ("failed", "worker_lost")
        )
        message = (
            f"worker {job.worker} stopped answering (silent for {silent_for} s) on "
            f"attempt {job.attempt} of {settings.max_attempts}"
        )
        if _changed(
            session.execute(
                update(Job)
                .where(*lost)
                .values(status=status, error_code=code, error_message=message, finished_at=now)
            )
        ):
            session.add(
                JobEvent(
                    job_id=job.id,
                    kind=status,
                    message=message,
                    data={"attempt": job.attempt, "code": code},
                )
            )
            session.commit()
            outcome["failed"].append(job.id)

    resend_before = now - timedelta(seconds=settings.requeue_after_seconds)
    forgotten = session.scalars(
        select(Job).where(Job.status == "queued", Job.enqueued_at < resend_before)
    ).all()
    for job in forgotten:
        session.add(
            JobEvent(
                job_id=job.id, kind="requeued", message="not claimed in time; message sent again"
            )
        )
        send_job(session, celery, job, settings.task_queue)
        outcome["resent"].append(job.id)
    session.commit()
    return outcome


class ReaperThread(threading.Thread):
    """Runs `reap_once` every `reaper_interval_seconds` until stopped.

    With `alive_file`, each pass that reached the database touches it: its age is the health of
    a reaper running on its own (`distillery reaper --check`)."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        celery: Celery,
        settings: Settings,
        alive_file: Path | None = None,
    ) -> None:
        super().__init__(name="distillery-reaper", daemon=True)
        self.factory, self.celery, self.settings = factory, celery, settings
        self.alive_file = alive_file
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.settings.reaper_interval_seconds):
            try:
                with self.factory() as session:
                    outcome = reap_once(session, self.celery, self.settings)
                if any(outcome.values()):
                    log.info("reaper: %s", outcome)
                if self.alive_file is not None:
                    self.alive_file.touch()
            except Exception:  # the database or broker is down: try again next round
                log.warning("reaper pass failed", exc_info=True)
