"""One object per form, however often it is posted.

Each form that creates something (a dataset upload, a job submit) carries a hidden one-time key,
made when the page is rendered. The POST runs through the API's own Idempotency-Key machinery
(app/idempotency.py) with that key, scoped like the API's to the caller and this form's URL: a
double click or the browser's "resubmit the form" gets the first request's object instead of
making a second. A second request that arrives while the first is still running waits for it
(the API answers 409 there; a form has nobody to retry it). Only successes are kept, so a form
the server refused can be corrected and posted again with the same key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.errors import Problem
from app.idempotency import Idempotency
from domain.auth import Caller
from domain.errors import Invalid

IDEMPOTENCY_FIELD = "idempotency_key"
# The API's limit on an Idempotency-Key header (and the column's size).
MAX_KEY_LENGTH = 255
# How long a resubmit waits for the first request with its key (an upload, a job's checks).
IN_FLIGHT_WAIT_SECONDS = 60.0
IN_FLIGHT_POLL_SECONDS = 0.2


class Created(BaseModel):
    """What a form's first request stores for its resubmits: the id of what it made."""

    id: str


async def create_once(
    request: Request,
    caller: Caller,
    key: str | None,
    request_sha256: str,
    create: Callable[[], Awaitable[str]],
) -> str:
    """The id `create()` returns, made at most once per (caller, form URL, key): a form posted
    again with its key and the same fields gets the first post's id. A blank key (a form from
    before keys, a script) just creates. The same key with other fields is refused (422), as
    the API refuses it."""
    key = (key or "").strip() or None
    if key is not None and len(key) > MAX_KEY_LENGTH:
        raise Invalid(
            "Invalid form",
            f"{IDEMPOTENCY_FIELD} is at most {MAX_KEY_LENGTH} characters; reload the page",
            field="_form",
        )
    once = Idempotency(
        request.app.state.session_factory,
        owner=caller.owner,
        key=key,
        endpoint=f"{request.method} {request.url.path}",
    )

    async def made() -> Created:
        return Created(id=await create())

    deadline = time.monotonic() + IN_FLIGHT_WAIT_SECONDS
    while True:
        try:
            result = await once.run(request_sha256, 201, made)
        except Problem as problem:
            if problem.field != "Idempotency-Key":
                raise
            if problem.status == 422:
                raise Invalid(
                    "Form already submitted",
                    "this form was sent before with other values; reload the page to send "
                    "these as a new request",
                    field="_form",
                ) from None
            if problem.status != 409 or time.monotonic() >= deadline:
                raise
            await asyncio.sleep(IN_FLIGHT_POLL_SECONDS)
            continue
        if isinstance(result, JSONResponse):
            return Created.model_validate_json(bytes(result.body)).id
        return result.id
