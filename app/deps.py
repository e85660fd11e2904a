"""FastAPI dependencies: everything a route needs comes from app.state, set up in create_app."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.errors import Problem
from app.idempotency import Idempotency
from app.serving import PredictorCache
from domain.auth import LOCAL_CALLER, Caller, authenticate
from domain.config import Settings
from domain.storage import ArtifactStore


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


def get_store(request: Request) -> ArtifactStore:
    return request.app.state.store


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_celery(request: Request) -> Celery:
    return request.app.state.celery


def get_predictors(request: Request) -> PredictorCache:
    return request.app.state.predictors


SessionDep = Annotated[Session, Depends(get_session)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
PredictorsDep = Annotated[PredictorCache, Depends(get_predictors)]


bearer_scheme = HTTPBearer(
    auto_error=False,
    description="An API key made with `distillery keys create --name NAME`, sent as "
    "`Authorization: Bearer dk_...` (not needed when the server runs with auth off)",
)


async def current_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Caller:
    """The key behind the request; with auth off, the local caller who sees everything.

    Async, and with a session of its own only when a key must be looked up: a plain `def`
    dependency costs a thread hop on every request, and on the predict hot path with auth off
    that hop (and the session it would open) is pure overhead."""
    if not request.app.state.settings.auth_enabled:
        return LOCAL_CALLER
    if credentials is None:
        raise Problem(
            401,
            "Unauthorized",
            "send an API key as 'Authorization: Bearer dk_...'; an operator makes one with "
            "`distillery keys create --name NAME`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    caller = await run_in_threadpool(
        _authenticate, request.app.state.session_factory, credentials.credentials
    )
    if caller is None:
        raise Problem(
            401,
            "Unauthorized",
            "the API key is unknown or revoked; ask an operator for a new one",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return caller


def _authenticate(session_factory: Callable[[], Session], secret: str) -> Caller | None:
    with session_factory() as session:
        return authenticate(session, secret)


CallerDep = Annotated[Caller, Depends(current_caller)]


def get_idempotency(
    request: Request,
    caller: CallerDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="Any unique string (a UUID): a retry with the same key and body gets "
            "the first response again (header Idempotent-Replayed: true) instead of creating "
            "a second resource; the same key with another body is 422, and 409 while the "
            "first request is still running. Keys are kept for 24 hours.",
        ),
    ] = None,
) -> Idempotency:
    return Idempotency(
        request.app.state.session_factory,
        owner=caller.owner,
        key=idempotency_key,
        endpoint=f"{request.method} {request.url.path}",
    )


IdempotencyDep = Annotated[Idempotency, Depends(get_idempotency)]
