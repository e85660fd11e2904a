"""The Celery app shared by the API (to send jobs by task name) and the worker (to run them).

The API never imports the worker's code: it sends `RUN_JOB_TASK` by name.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from domain.config import Settings

RUN_JOB_TASK = "distillery.run_job"
# Longer than any job may run: Redis redelivers an unacknowledged message after this, and with
# late acks a job's message stays unacknowledged for as long as the job runs.
VISIBILITY_TIMEOUT_SECONDS = 48 * 3600


def transport_options(broker_url: str) -> dict[str, Any]:
    if broker_url.startswith(("redis", "rediss")):
        return {"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS}
    if broker_url.startswith("sqla+sqlite"):
        # kombu hands these to create_engine: wait for the file lock rather than fail, since API
        # and worker processes write the same SQLite file.
        return {"connect_args": {"timeout": 30}}
    return {}


def make_celery(settings: Settings) -> Celery:
    settings.ensure_local_dirs()
    celery = Celery("distillery", broker=settings.resolved_broker_url())
    celery.conf.update(
        # The SQL job row is the source of truth; Celery's result backend would be a second one.
        task_ignore_result=True,
        result_backend=None,
        task_default_queue=settings.task_queue,
        # Acknowledge after the task ends, so a worker killed mid-job leaves the message to be
        # redelivered; the job's compare-and-set claim keeps a redelivery from running it twice.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One job at a time per worker process: a prefetched second job would wait for hours.
        worker_prefetch_multiplier=1,
        broker_transport_options=transport_options(settings.resolved_broker_url()),
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        # A runaway job ends: the soft limit raises inside the task (recorded as failed/timeout),
        # the hard limit a minute later kills the child process if it did not stop.
        task_soft_time_limit=max(1, settings.job_time_limit_seconds - 60),
        task_time_limit=settings.job_time_limit_seconds,
    )
    return celery


def queue_for(base_queue: str, accelerator: str) -> str:
    """Jobs that need a GPU (or must stay off one) go to their own queue; the rest share one."""
    return base_queue if accelerator == "any" else f"{base_queue}.{accelerator}"


def worker_queues(base_queue: str, has_gpu: bool) -> list[str]:
    return [queue_for(base_queue, "gpu" if has_gpu else "cpu"), base_queue]


def enqueue_job(celery: Celery, job_id: str, queue: str) -> None:
    celery.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)
