"""API keys and callers: who is asking, and which rows they may see.

A key is `dk_` plus 32 random URL-safe bytes; only its SHA-256 is stored, so a leaked database
does not leak usable keys. Each key owns what it creates; an admin key sees every owner's rows.
With auth off (the embedded single-user default) every request is the one local caller, who
sees everything.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from domain.orm import ApiKey, utcnow

KEY_PREFIX = "dk_"
# Shown in listings so an operator can tell keys apart: "dk_" and 8 characters of the secret.
DISPLAY_PREFIX_CHARS = 11

SelectT = TypeVar("SelectT", bound=Select[Any])


@dataclass(frozen=True)
class Caller:
    """The identity behind a request. `key_id` is None when auth is off."""

    key_id: str | None
    is_admin: bool

    @property
    def owner(self) -> str | None:
        """The owner recorded on rows this caller creates."""
        return self.key_id

    def can_see(self, owner: str | None) -> bool:
        return self.is_admin or owner == self.key_id

    def visible(self, query: SelectT, owner_column: Any) -> SelectT:
        """`query` narrowed to the rows this caller may see."""
        return query if self.is_admin else query.where(owner_column == self.key_id)


# Auth off: one local user who owns nothing in particular and sees everything.
LOCAL_CALLER = Caller(key_id=None, is_admin=True)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(session: Session, name: str, *, is_admin: bool = False) -> tuple[ApiKey, str]:
    """Create a key; return its row and the secret, which is not stored and cannot be recovered."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        name=name,
        prefix=secret[:DISPLAY_PREFIX_CHARS],
        secret_sha256=hash_secret(secret),
        is_admin=is_admin,
    )
    session.add(key)
    session.commit()
    return key, secret


def revoke_key(session: Session, key_id: str) -> ApiKey | None:
    """Revoke a key (idempotent); None when no key has that id."""
    key = session.get(ApiKey, key_id)
    if key is not None and key.revoked_at is None:
        key.revoked_at = utcnow()
        session.commit()
    return key


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def authenticate(session: Session, secret: str) -> Caller | None:
    """The caller a secret belongs to, or None for an unknown or revoked key."""
    if not secret.startswith(KEY_PREFIX):
        return None
    key = session.scalar(select(ApiKey).where(ApiKey.secret_sha256 == hash_secret(secret)))
    if key is None or key.revoked_at is not None:
        return None
    return Caller(key_id=key.id, is_admin=key.is_admin)
