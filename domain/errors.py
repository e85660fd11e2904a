"""What the domain refuses, said without HTTP: each shell maps these once (app/errors.py turns
them into problem+json with a status per class; the CLI prints them).

Every error has a short title, a detail that says how to fix it, and the request field at
fault where there is one.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    def __init__(
        self,
        title: str,
        detail: str,
        *,
        field: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.title, self.detail, self.field = title, detail, field
        self.extra = extra or {}


class NotFound(DomainError):
    """No such row, or one the caller may not see (someone else's row is as absent)."""

    def __init__(self, kind: str, identifier: str, field: str | None = None) -> None:
        super().__init__(f"{kind} not found", f"no {kind} with id '{identifier}'", field=field)


class Invalid(DomainError):
    """The input cannot be used as it is."""


class Conflict(DomainError):
    """The input is fine, but the state of what it names forbids the operation now."""


class Forbidden(DomainError):
    """This server does not allow the operation (a setting, not the caller's key)."""


class TooLarge(DomainError):
    """The input is over a size limit."""


class Unsupported(DomainError):
    """The input is of a kind (file type, archive format) the service does not read."""


class Unavailable(DomainError):
    """A service the operation needs (the job queue) does not answer; try again later."""
