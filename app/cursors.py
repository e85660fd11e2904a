"""The API's page cursor: `<microseconds since the epoch>.<id>` of the last row of a page.

Its grammar is the `pattern` of the `cursor` query parameter, and every string that matches it
is a position the listing can start after, so the document says exactly which cursors the
server takes (anything else is a 422 from validation, before the listing runs).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import Query

from domain.pagination import decode_cursor, encode_cursor

CURSOR_PATTERN = r"^[0-9]{1,16}\.[A-Za-z0-9_-]{1,64}$"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

CursorQuery = Query(
    default=None,
    pattern=CURSOR_PATTERN,
    description="next_cursor of the previous page",
)


def to_domain(cursor: str | None) -> str | None:
    """The domain's cursor for an API cursor that matched CURSOR_PATTERN."""
    if cursor is None:
        return None
    micros, _, row_id = cursor.partition(".")
    return encode_cursor(EPOCH + timedelta(microseconds=int(micros)), row_id)


def from_domain(cursor: str | None) -> str | None:
    """The API's cursor for the domain's next-page cursor."""
    if cursor is None:
        return None
    created_at, row_id = decode_cursor(cursor)
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)
    micros = (created_at - EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{row_id}"
