"""FastAPI dependencies: everything a route needs comes from app.state, set up in create_app."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.config import Settings
from app.serving import PredictorCache
from app.storage import LocalArtifactStore


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


def get_store(request: Request) -> LocalArtifactStore:
    return request.app.state.store


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_celery(request: Request) -> Celery:
    return request.app.state.celery


def get_predictors(request: Request) -> PredictorCache:
    return request.app.state.predictors


SessionDep = Annotated[Session, Depends(get_session)]
StoreDep = Annotated[LocalArtifactStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
PredictorsDep = Annotated[PredictorCache, Depends(get_predictors)]
