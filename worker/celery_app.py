"""The worker's Celery app: the shared queue settings plus what only a training worker needs.

Start it with `distillery worker` (or `celery -A worker.celery_app worker --concurrency=1`).
torch is imported by the task module, but CUDA is first touched inside a task, in the pool's
child process: a forked child cannot use a CUDA context its parent created.
"""

from __future__ import annotations

from typing import Any

from celery.signals import setup_logging, worker_ready, worker_shutdown

from domain.config import get_settings
from domain.logs import configure_logging
from domain.queue import make_celery
from domain.runtime import make_runtime

celery = make_celery(get_settings())
celery.conf.update(
    # A job's child process is replaced after each job: training frees memory reliably only
    # when the process that held the model ends.
    worker_max_tasks_per_child=1,
    # On shutdown (SIGTERM), let a running job go on this long before the worker exits; the
    # message is not acknowledged, so an unfinished job is redelivered to another worker.
    worker_soft_shutdown_timeout=60.0,
    worker_enable_soft_shutdown_on_idle=True,
    include=["worker.tasks"],
)
app = celery

_reaper: Any = None


@setup_logging.connect
def use_distillery_logging(**_: Any) -> None:
    """Celery's log setup replaced by ours: the same JSON or text lines as the API, each
    carrying the job id while a job runs (worker/tasks.py sets it)."""
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)


@worker_ready.connect
def start_reaper(**_: Any) -> None:
    """Each worker's main process runs a reaper thread: it is idle while the pool trains, and a
    deployment then needs no extra process for it. Reapers are safe to run side by side."""
    global _reaper
    from worker.reaper import ReaperThread

    settings = get_settings()
    _reaper = ReaperThread(make_runtime(settings).sessions, celery, settings)
    _reaper.start()


@worker_shutdown.connect
def stop_reaper(**_: Any) -> None:
    if _reaper is not None:
        _reaper.stopping.set()
