"""The worker's Celery app: the shared queue settings plus what only a training worker needs.

Start it with `celery -A worker.celery_app worker --concurrency=1`. torch is imported by the
task module but CUDA is first touched inside a task, so the prefork parent never initialises it
(a forked child cannot use a CUDA context its parent created).
"""

from __future__ import annotations

from app.config import get_settings
from app.queue import make_celery

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
