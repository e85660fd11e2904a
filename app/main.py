"""create_app(): settings, database, artifact store, queue client, routers, error handlers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi

import distillery
from app.deps import current_caller
from app.errors import document_problems, install_error_handlers, problem_responses
from app.logging_setup import RequestIdMiddleware
from app.openapi import document_contract
from app.prometheus import install_metrics
from app.routes import datasets, health, jobs, models
from app.serving import make_predictor_cache, serving_lifespan
from app.ui import install_console
from app.uploads import FORM_OVERHEAD_BYTES, BodySizeLimit
from domain.config import Settings, get_settings
from domain.db import make_engine, make_session_factory
from domain.logs import configure_logging
from domain.queue import make_celery
from domain.storage import make_store

log = logging.getLogger("distillery.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_format, settings.log_level)
    settings.ensure_local_dirs()
    app = FastAPI(
        title="Distillery",
        version=distillery.__version__,
        description="Fine-tune and distill transformer text classifiers; serve the students. "
        "The web console is at [/ui](/ui).",
        lifespan=serving_lifespan,
    )
    engine = make_engine(settings.resolved_database_url())
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.store = make_store(settings)
    app.state.celery = make_celery(settings)
    app.state.predictors = make_predictor_cache(settings)
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimit, max_body_bytes=settings.max_upload_bytes + FORM_OVERHEAD_BYTES
    )
    install_metrics(app)
    # Added last, so it is the outermost: refused bodies get a request id and an access line too.
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health.router)
    # Every /v1 route needs a key when auth is on, including routes added later to these routers.
    for router in (datasets.router, models.router, jobs.router):
        app.include_router(
            router, dependencies=[Depends(current_caller)], responses=problem_responses(401, 500)
        )
    # The web console (/ui, and / links to it): pages on the same domain services, no /v1 calls.
    install_console(app)
    install_openapi(app, auth_enabled=settings.auth_enabled)
    log.info(
        "database %s, broker %s, artifacts %s",
        engine.url.get_backend_name(),
        settings.resolved_broker_url().split(":", 1)[0],
        app.state.store.location,
    )
    if settings.auth_enabled:
        log.info("auth on: every /v1 request needs an API key")
    else:
        log.warning(
            "AUTH IS OFF: anyone who can reach this server can read, change and delete every "
            "dataset, model and job. Fine for a single user on localhost; elsewhere set "
            "DISTILLERY_AUTH_ENABLED=true and make keys with `distillery keys create`."
        )
    return app


def install_openapi(app: FastAPI, *, auth_enabled: bool) -> None:
    """OpenAPI with the Problem schema that every error response refers to, the security this
    server's auth mode really applies, and links from each create to its reads and uses."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = document_problems(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
            app.openapi_schema = document_contract(document, auth_enabled=auth_enabled)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
