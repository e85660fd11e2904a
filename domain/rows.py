"""Rows as a caller sees them: one that is missing, deleted or someone else's is not found (so
ids of other owners' rows cannot be probed), and listings hold only the caller's own rows."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.auth import Caller
from domain.errors import NotFound
from domain.orm import Dataset, Job, Model, is_well_formed_id
from domain.pagination import paginate

RowT = TypeVar("RowT", Dataset, Model, Job)
ListedT = TypeVar("ListedT", Dataset, Model)
# The id prefix and the name in errors of each kind of row.
KINDS: dict[type, tuple[str, str]] = {
    Dataset: ("ds", "dataset"),
    Model: ("mdl", "model"),
    Job: ("job", "job"),
}


def visible_row(
    session: Session, row_type: type[RowT], row_id: str, caller: Caller, field: str | None = None
) -> RowT:
    """The row, if it exists, is not deleted and `caller` may see it; else NotFound."""
    prefix, kind = KINDS[row_type]
    row = session.get(row_type, row_id) if is_well_formed_id(prefix, row_id) else None
    if row is None or getattr(row, "deleted_at", None) is not None or not caller.can_see(row.owner):
        raise NotFound(kind, row_id, field)
    return row


def visible_page(
    session: Session, row_type: type[ListedT], caller: Caller, limit: int, cursor: str | None
) -> tuple[list[ListedT], str | None]:
    """One page of the caller's rows that are not deleted, newest first."""
    query = caller.visible(select(row_type).where(row_type.deleted_at.is_(None)), row_type.owner)
    return paginate(session, query, row_type.created_at, row_type.id, limit, cursor)
