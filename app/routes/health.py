from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.engine import make_url

import distillery
from app.deps import SettingsDep
from app.schemas import Health

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
