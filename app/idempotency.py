"""Idempotency-Key for the POSTs that create things (datasets, models, jobs).

The first request with a key records itself as in flight, runs, and stores its response; a retry
with the same key and the same request gets that response again; the same key with another request
is refused (422), and so is a retry while the first is still running (409). Only successes are
stored: a request that failed leaves nothing behind, so its retry runs again. A key whose
dataset or model has since been deleted is free again: replaying its response would hand out an
id that is gone (404), so the request runs anew.

Records live in their own short transactions (not the route's session) so a concurrent retry sees
the in-flight record at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar, cast

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.errors import Problem
from domain.orm import Dataset, IdempotencyRecord, Model, utcnow

# After this a key may be used again for a new request.
KEY_LIFETIME = timedelta(hours=24)
# An in-flight record this old belongs to a process that died mid-request; a retry takes it over.
IN_FLIGHT_TIMEOUT = timedelta(minutes=15)
# Owner recorded with auth off: NULLs would never collide in the unique constraint.
ANONYMOUS_OWNER = "anonymous"
REPLAYED_HEADER = "Idempotent-Replayed"

ResultT = TypeVar("ResultT", bound=BaseModel)


def fingerprint_json(body: BaseModel) -> str:
    """SHA-256 of a JSON request as parsed, so key order and whitespace do not matter."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def fingerprint_upload(content: bytes, fields: dict[str, str | None]) -> str:
    """SHA-256 of an upload: the file's bytes and every other form field (filename included)."""
    digest = hashlib.sha256(content)
    digest.update(json.dumps(fields, sort_keys=True).encode())
    return digest.hexdigest()


class Idempotency:
    """One request's view of its Idempotency-Key (or of its absence: then `run` just runs)."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        owner: str | None,
        key: str | None,
        endpoint: str,
    ) -> None:
        self.session_factory = session_factory
        self.owner = owner or ANONYMOUS_OWNER
        self.key = key
        self.endpoint = endpoint
        self.record_id: int | None = None

    async def run(
        self,
        request_sha256: str,
        status_code: int,
        create: Callable[[], Awaitable[ResultT]],
    ) -> ResultT | JSONResponse:
        """`create()`'s result, or the stored response of the first request with this key."""
        if self.key is None:
            return await create()
        replay = await run_in_threadpool(self._begin, request_sha256)
        if replay is not None:
            return replay
        try:
            result = await create()
        except BaseException:
            await run_in_threadpool(self._forget)
            raise
        await run_in_threadpool(self._complete, status_code, result.model_dump(mode="json"))
        return result

    def _begin(self, request_sha256: str) -> JSONResponse | None:
        with self.session_factory() as session:
            session.add(
                IdempotencyRecord(
                    owner=self.owner,
                    key=self.key,
                    endpoint=self.endpoint,
                    request_sha256=request_sha256,
                    status="in_flight",
                )
            )
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
            else:
                self.record_id = self._find(session).id
                return None
            return self._against_existing(session, request_sha256)

    def _find(self, session: Session) -> IdempotencyRecord:
        record = session.scalar(
            select(IdempotencyRecord).where(
                IdempotencyRecord.owner == self.owner,
                IdempotencyRecord.key == self.key,
                IdempotencyRecord.endpoint == self.endpoint,
            )
        )
        if record is None:  # the first request failed and forgot its key just now
            raise Problem(
                409,
                "Request in progress",
                "the first request with this Idempotency-Key just ended; retry",
                field="Idempotency-Key",
                headers={"Retry-After": "1"},
            )
        return record

    def _against_existing(self, session: Session, request_sha256: str) -> JSONResponse | None:
        record = self._find(session)
        now = utcnow()
        expired = record.created_at < now - KEY_LIFETIME
        abandoned = record.status == "in_flight" and record.created_at < now - IN_FLIGHT_TIMEOUT
        gone = record.status == "done" and _created_resource_gone(session, record.response_body)
        if expired or abandoned or gone:
            taken = session.execute(
                update(IdempotencyRecord)
                .where(
                    IdempotencyRecord.id == record.id,
                    IdempotencyRecord.created_at == record.created_at,
                )
                .values(
                    request_sha256=request_sha256,
                    status="in_flight",
                    response_status=None,
                    response_body=None,
                    created_at=now,
                )
            )
            session.commit()
            if cast(CursorResult[Any], taken).rowcount:
                self.record_id = record.id
                return None
            record = self._find(session)
        if record.request_sha256 != request_sha256:
            raise Problem(
                422,
                "Idempotency key reused",
                f"Idempotency-Key '{self.key}' was first sent with a different request; "
                "send a new key for a new request",
                field="Idempotency-Key",
            )
        if record.status == "in_flight":
            raise Problem(
                409,
                "Request in progress",
                "the first request with this Idempotency-Key is still running; retry when it "
                "has finished to get its response",
                field="Idempotency-Key",
                headers={"Retry-After": "1"},
            )
        return JSONResponse(
            record.response_body,
            status_code=record.response_status or 200,
            headers={REPLAYED_HEADER: "true"},
        )

    def _complete(self, status_code: int, body: dict[str, Any]) -> None:
        with self.session_factory() as session:
            session.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.id == self.record_id)
                .values(status="done", response_status=status_code, response_body=body)
            )
            session.commit()

    def _forget(self) -> None:
        with self.session_factory() as session:
            session.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.id == self.record_id,
                    IdempotencyRecord.status == "in_flight",
                )
            )
            session.commit()


def _created_resource_gone(session: Session, response_body: dict[str, Any] | None) -> bool:
    """Whether the dataset or model a stored response created has been deleted since."""
    created = str((response_body or {}).get("id"))
    row: Dataset | Model | None
    if created.startswith("ds_"):
        row = session.get(Dataset, created)
    elif created.startswith("mdl_"):
        row = session.get(Model, created)
    else:
        return False
    return row is None or row.deleted_at is not None
