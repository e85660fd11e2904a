"""Logs that can be followed across processes: every line carries the request id (API) or the
job id (worker) of the work it belongs to.

`DISTILLERY_LOG_FORMAT=json` writes one JSON object per line (for a log shipper);
`text` (the default) writes the same fields readably. The ids live in context variables, set by
the API's `RequestIdMiddleware` (app/logging_setup.py) for a request and by the worker around a
job, and a logging filter copies them onto each record, so code that logs never passes them by
hand.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
job_id_var: ContextVar[str | None] = ContextVar("job_id", default=None)

# Attributes every LogRecord has; anything else on a record was passed in `extra=`. uvicorn's
# color_message repeats the message with terminal colour codes.
STANDARD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class ContextIdsFilter(logging.Filter):
    """Copies the current request and job ids onto every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        if getattr(record, "job_id", None) is None:
            record.job_id = job_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in STANDARD_ATTRIBUTES and value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(ids)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = [
            f"{name}={value}"
            for name in ("request_id", "job_id")
            if (value := getattr(record, name, None))
        ]
        record.ids = f" [{' '.join(ids)}]" if ids else ""
        return super().format(record)


class _DistilleryHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installed, so configuring again replaces it."""


def configure_logging(
    log_format: str = "text", level: str = "INFO", stream: TextIO | None = None
) -> logging.Handler:
    """Send every logger's records through one handler on the root logger, in `log_format`."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _DistilleryHandler)]:
        root.removeHandler(handler)
    handler = _DistilleryHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextIdsFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Every record logged inside (in this thread or context) carries `job_id`."""
    token = job_id_var.set(job_id)
    try:
        yield
    finally:
        job_id_var.reset(token)
