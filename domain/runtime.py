"""`make_runtime(settings)`: the database engine, session factory and artifact store that the
API, the worker and the reaper each build once, the same way."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from domain.config import Settings
from domain.db import make_engine, make_session_factory
from domain.storage import ArtifactStore, make_store


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: ArtifactStore


def make_runtime(settings: Settings) -> Runtime:
    settings.ensure_local_dirs()
    engine = make_engine(settings.resolved_database_url())
    return Runtime(settings, engine, make_session_factory(engine), make_store(settings))
