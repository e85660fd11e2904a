"""Request-size limits enforced while streaming, multipart reading, and list-valued form fields.

`BodySizeLimit` wraps the whole app: a body whose Content-Length is over the cap is refused
before a byte of it is read, and a body that turns out bigger than declared (or is chunked) is cut
off as soon as it passes the cap, before FastAPI's form parser has spooled it all to disk.
`read_capped` then checks the file part itself against the exact cap.
"""

from __future__ import annotations

from fastapi import UploadFile
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PROBLEM_JSON, Problem

CHUNK_BYTES = 1024 * 1024
# Room for the multipart framing and the form fields that travel with a file.
FORM_OVERHEAD_BYTES = 1024 * 1024


def _too_large_detail(max_bytes: int) -> str:
    return (
        f"the request body is over the {max_bytes} byte limit "
        "(DISTILLERY_MAX_UPLOAD_BYTES on the server); send a smaller file"
    )


class BodyTooLarge(StarletteHTTPException):
    """Raised from `receive` once a body passes the cap; FastAPI passes HTTPExceptions on."""

    title = "Request body too large"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, _too_large_detail(max_bytes))


class BodySizeLimit:
    """ASGI middleware: 413 problem+json for request bodies over `max_body_bytes`."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            response = JSONResponse(
                {
                    "type": "about:blank",
                    "title": BodyTooLarge.title,
                    "status": 413,
                    "detail": _too_large_detail(self.max_body_bytes),
                    "instance": scope.get("path", ""),
                },
                status_code=413,
                media_type=PROBLEM_JSON,
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        received = 0

        async def receive_capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        await self.app(scope, receive_capped, send)


async def read_capped(upload: UploadFile, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while chunk := await upload.read(CHUNK_BYTES):
        total += len(chunk)
        if total > max_bytes:
            raise Problem(
                413,
                "File too large",
                f"the file is over the {max_bytes} byte limit; send a smaller file",
                field="file",
            )
        chunks.append(chunk)
    return b"".join(chunks)


def parse_name_list(value: str | None) -> list[str] | None:
    """'question, sentence' or '["question", "sentence"]' -> ['question', 'sentence']."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.startswith("["):
        text = text.strip("[]")
    names = [part.strip().strip("'\"") for part in text.split(",")]
    return [name for name in names if name]
