"""The API's half of the logs: a request id on every request and one access line per response.
The formats and the context variables are domain/logs.py's, shared with the worker."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.logs import request_id_var

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's id is kept when it is short and printable; anything else could forge log lines.
ACCEPTED_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
access_log = logging.getLogger("distillery.access")


class RequestIdMiddleware:
    """Gives each request an id (the caller's X-Request-ID when acceptable, else a new one),
    returns it in the response's X-Request-ID, and logs one access line when the response ends.

    Pure ASGI, so streamed responses are timed to their last byte and nothing is buffered.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), ""
        )
        request_id = offered if ACCEPTED_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            client = scope.get("client")
            access_log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "client": client[0] if client else None,
                },
            )
            request_id_var.reset(token)
