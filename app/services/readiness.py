"""Readiness: can this process reach everything a request or a job needs, right now?"""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import Celery
from sqlalchemy import Engine, text

from domain.storage import ArtifactStore

log = logging.getLogger("distillery.api")
# Each probe gives up after about this long, so an orchestrator's probe gets an answer in time.
PROBE_TIMEOUT_SECONDS = 3.0


def probe_database(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def probe_broker(celery: Celery) -> None:
    with celery.connection_for_write() as connection:
        connection.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0, timeout=PROBE_TIMEOUT_SECONDS
        )


def component_failures(engine: Engine, celery: Celery, store: ArtifactStore) -> dict[str, str]:
    """Each unreachable component's name and the kind of error; empty when all answer.

    Only the error's type goes back to the (unauthenticated) caller; the full error, which may
    name hosts, goes to the log."""
    probes: dict[str, Callable[[], None]] = {
        "database": lambda: probe_database(engine),
        "broker": lambda: probe_broker(celery),
        "storage": store.check,
    }
    failures: dict[str, str] = {}
    for name, probe in probes.items():
        try:
            probe()
        except Exception as exc:
            log.warning("readiness: %s unreachable", name, exc_info=True)
            failures[name] = type(exc).__name__
    return failures
