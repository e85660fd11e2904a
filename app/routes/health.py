from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy.engine import make_url

import distillery
from app.deps import CeleryDep, SettingsDep, StoreDep
from app.errors import Problem, problem_responses
from app.schemas import Health, Readiness
from app.services.readiness import component_failures

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, operation_id="healthz")
def healthz(settings: SettingsDep) -> Health:
    """Liveness, which database and broker this process was configured with, and whether API
    keys are required (`auth: off` means anyone who reaches the server sees everything)."""
    return Health(
        status="ok",
        version=distillery.__version__,
        database=make_url(settings.resolved_database_url()).get_backend_name(),
        broker=settings.resolved_broker_url().split(":", 1)[0],
        auth="on" if settings.auth_enabled else "off",
    )


@router.get(
    "/readyz",
    response_model=Readiness,
    operation_id="readyz",
    responses=problem_responses(503),
)
def readyz(request: Request, celery: CeleryDep, store: StoreDep) -> Readiness:
    """Ready to serve: the database, the broker and the artifact store answer right now.
    Otherwise 503, with `field` naming the first component that failed and `components` all."""
    failures = component_failures(request.app.state.engine, celery, store)
    components = {name: failures.get(name, "ok") for name in ("database", "broker", "storage")}
    if failures:
        first = next(iter(failures))
        raise Problem(
            503,
            "Not ready",
            f"{', '.join(failures)} unreachable ({failures[first]}); the server log has the "
            "full error",
            field=first,
            extra={"components": components},
        )
    return Readiness(status="ready", components={name: "ok" for name in components})
