"""Cursor pagination, newest first: the cursor is an opaque token for (created_at, id)."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from domain.errors import Invalid

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, row_id = json.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(created_at), str(row_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise Invalid(
            "Invalid cursor",
            "cursor is not one this API returned; use next_cursor from the last page",
            field="cursor",
        ) from None


def paginate(
    session: Session,
    query: Select[Any],
    created_at: InstrumentedAttribute[Any],
    row_id: InstrumentedAttribute[Any],
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """One page of `query` ordered newest first, and the cursor of the next page (or None)."""
    if cursor:
        after_time, after_id = decode_cursor(cursor)
        query = query.where(
            or_(created_at < after_time, and_(created_at == after_time, row_id < after_id))
        )
    rows = list(session.scalars(query.order_by(created_at.desc(), row_id.desc()).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(getattr(last, created_at.key), getattr(last, row_id.key))
