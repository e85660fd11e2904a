"""The API's own words for what went wrong, for the console to show next to the field at fault.

The console calls the same domain services as the API, so it meets the same exceptions; it asks
the app's registered exception handlers (app/errors.py) to describe them, and reads back the
problem+json body. One mapping, so a form shows exactly the message the API would send.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError


def _handler_for(request: Request, exc: Exception) -> Any | None:
    handlers = request.app.exception_handlers
    for kind in type(exc).__mro__:
        if kind is not Exception and kind in handlers:
            return handlers[kind]
    return None


def is_known_problem(request: Request, exc: Exception) -> bool:
    """Whether the API answers `exc` with a problem of its own (not the catch-all 500)."""
    return isinstance(exc, ValidationError) or _handler_for(request, exc) is not None


async def problem_for(request: Request, exc: Exception) -> dict[str, Any]:
    """The problem+json body the API would answer `exc` with."""
    if isinstance(exc, ValidationError):
        # A form checked with the API's request model: described as the API describes its body.
        exc = RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        )
    handler = _handler_for(request, exc)
    if handler is None:
        raise exc
    response = await handler(request, exc)
    problem: dict[str, Any] = json.loads(bytes(response.body))
    return problem


def field_of(problem: dict[str, Any]) -> str:
    """The form field a problem belongs next to: `hyperparameters.x` is the hyperparameters box,
    `rows[0].question` the question input, and a problem without one goes above the form."""
    field = str(problem.get("field") or "")
    for prefix in ("hyperparameters", "rows"):
        if field.startswith(prefix):
            return field.split(".", 1)[1] if prefix == "rows" and "." in field else prefix
    return field or "_form"
