"""The reaper: no job stays `running` after its worker is gone, and no queued job is forgotten.

- A running job whose heartbeat is older than `heartbeat_timeout_seconds` lost its worker: it is
  put back to `queued` and its message sent again while attempts remain (the next attempt
  resumes from the last checkpoint), else it ends `failed` with code `worker_lost`.
- A queued job whose message was sent more than `requeue_after_seconds` ago and never claimed
  has its message sent again (a broker restart without persistence loses messages).
- An auto-distill search waiting on its trials (phase "trials") holds no worker and beats no
  heart: it is never taken for lost. When all its trials have ended (the worker that ended the
  last one died before moving the search on) or its time limit has passed, the reaper moves it
  on itself (domain/auto_distill.advance, idempotent).

Every change is a compare-and-set on the job row (domain/lifecycle.py), so any number of
reapers may run at once (each worker runs one in its main process; `distillery reaper` runs one
on its own).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from domain import lifecycle
from domain.auto_distill import advance, needs_advance, waiting_searches
from domain.config import Settings
from domain.jobs import send_job
from domain.orm import Job, utcnow
from domain.status import JobStatus

log = logging.getLogger("distillery.reaper")


def reap_once(session: Session, celery: Celery, settings: Settings) -> dict[str, list[str]]:
    """One pass; returns the ids it re-queued, failed and re-sent."""
    now = utcnow()
    stale_before = now - timedelta(seconds=settings.heartbeat_timeout_seconds)
    outcome: dict[str, list[str]] = {"requeued": [], "failed": [], "resent": []}
    stale = session.scalars(
        select(Job).where(
            Job.status == JobStatus.RUNNING,
            Job.heartbeat_at < stale_before,
            # A search waiting on its trials has no heartbeat to lose.
            Job.phase.is_distinct_from(lifecycle.TRIALS),
        )
    ).all()
    for job in stale:
        if job.attempt < settings.max_attempts and not job.cancel_requested:
            if lifecycle.requeue_lost(session, job, stale_before, settings.max_attempts):
                send_job(session, celery, job, settings.task_queue)
                outcome["requeued"].append(job.id)
        elif lifecycle.fail_lost(session, job, stale_before, settings.max_attempts):
            outcome["failed"].append(job.id)

    resend_before = now - timedelta(seconds=settings.requeue_after_seconds)
    forgotten = session.scalars(
        select(Job).where(Job.status == JobStatus.QUEUED, Job.enqueued_at < resend_before)
    ).all()
    for job in forgotten:
        lifecycle.add_event(session, job.id, "requeued", "not claimed in time; message sent again")
        send_job(session, celery, job, settings.task_queue)
        outcome["resent"].append(job.id)
    session.commit()
    for search in waiting_searches(session):
        if needs_advance(session, search, now):
            moved = advance(session, search.id)
            if moved not in ("waiting", "not_waiting"):
                outcome.setdefault("advanced", []).append(search.id)
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
