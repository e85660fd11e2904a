"""The web console: server-rendered pages under /ui, served by the API process itself.

Pages call the same domain services as the /v1 routes (never the API over HTTP), so they see
exactly what the caller's key sees and refuse with the API's own messages. Every asset is a
file in static/: no CDN, no build step, works air-gapped.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.ui import pages_auth, pages_datasets, pages_jobs, pages_models
from app.ui.render import STATIC


def install_console(app: FastAPI) -> None:
    for module in (pages_auth, pages_datasets, pages_models, pages_jobs):
        app.include_router(module.router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="console-static")
