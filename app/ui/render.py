"""Templates and the headers every console page gets.

Pages load only this server's own static files (a strict Content-Security-Policy says so to the
browser too), so the console works with no network beyond the server itself.
"""

from __future__ import annotations

import math
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, Response

from app.ui.session import csrf_token, remember_csrf

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

# Scripts and styles from this server only, no inline script; the report's figures are data:
# images. frame-ancestors: no other site may frame the console (clickjacking a cancel button).
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'"
)


def human_bytes(value: int | None) -> str:
    if value is None:
        return "n/a"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def human_number(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def percent(value: float) -> str:
    return f"{100 * value:.0f}%"


environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters.update(bytes=human_bytes, number=human_number, when=when, percent=percent)


def page(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
) -> Response:
    """Render a console page with what every page needs: the CSRF token for its forms, a fresh
    one-time key for a form that creates something (app/ui/once.py), who is signed in, and
    whether auth is on."""
    settings = request.app.state.settings
    values = {
        "request": request,
        "csrf_token": csrf_token(request),
        "form_key": secrets.token_urlsafe(24),
        "auth_enabled": settings.auth_enabled,
        "signed_in_as": getattr(request.state, "console_key_name", None),
        "errors": {},
        "form": {},
        **context,
    }
    html = environment.get_template(template).render(values)
    response = HTMLResponse(html, status_code=status_code)
    return with_console_headers(request, response)


def with_console_headers(request: Request, response: Response, *, csp: str = CSP) -> Response:
    response.headers["Content-Security-Policy"] = csp
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    # Pages show one key's rows: never from a shared cache, never after logout via Back.
    response.headers["Cache-Control"] = "no-store"
    remember_csrf(request, response)
    return response
