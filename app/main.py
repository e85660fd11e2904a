"""create_app(): settings, database, artifact store, queue client, routers, error handlers."""

from __future__ import annotations

import logging

from fastapi import FastAPI

import distillery
from app.config import Settings, get_settings
from app.db import make_engine, make_session_factory
from app.errors import install_error_handlers
from app.queue import make_celery
from app.routes import datasets, health, jobs, models
from app.serving import PredictorCache
from app.storage import LocalArtifactStore

log = logging.getLogger("distillery.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.ensure_local_dirs()
    app = FastAPI(
        title="Distillery",
        version=distillery.__version__,
        description="Fine-tune and distill transformer text classifiers; serve the students.",
    )
    engine = make_engine(settings.resolved_database_url())
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.store = LocalArtifactStore(settings.resolved_artifact_dir())
    app.state.celery = make_celery(settings)
    app.state.predictors = PredictorCache(settings.model_cache_size)
    install_error_handlers(app)
    for router in (health.router, datasets.router, models.router, jobs.router):
        app.include_router(router)
    log.info(
        "database %s, broker %s, artifacts %s",
        engine.url.get_backend_name(),
        settings.resolved_broker_url().split(":", 1)[0],
        settings.resolved_artifact_dir(),
    )
    return app
