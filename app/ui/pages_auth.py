"""The server's front page (links to the console and the API docs); sign in with an API key,
sign out; `/ui` itself opens the jobs list."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.deps import SessionDep
from app.ui.render import page, with_console_headers
from app.ui.routing import ConsoleRoute
from app.ui.session import (
    CSRF_FIELD,
    check_csrf,
    clear_session,
    rotate_csrf,
    safe_next,
    set_session,
)
from domain.auth import authenticate

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


@router.get("/")
def front_page(request: Request) -> Response:
    return page(request, "front.html", {})


@router.get("/ui")
def console_home() -> Response:
    return RedirectResponse("/ui/jobs", status_code=303)


@router.get("/ui/login")
def login_page(request: Request, next: str | None = None) -> Response:
    if not request.app.state.settings.auth_enabled:
        return RedirectResponse(safe_next(next), status_code=303)
    return page(request, "login.html", {"next": safe_next(next)})


@router.post("/ui/login")
def login(
    request: Request,
    session: SessionDep,
    api_key: str = Form(default=""),
    next: str = Form(default="/ui/jobs"),
    csrf_token: str = Form(default="", alias=CSRF_FIELD),
) -> Response:
    check_csrf(request, csrf_token)
    target = safe_next(next)
    if not request.app.state.settings.auth_enabled:
        return RedirectResponse(target, status_code=303)
    secret = api_key.strip()
    if authenticate(session, secret) is None:
        message = (
            "paste an API key (dk_...); an operator makes one with "
            "`distillery keys create --name NAME`"
            if not secret
            else "the API key is unknown or revoked; ask an operator for a new one"
        )
        return page(
            request,
            "login.html",
            {"next": target, "errors": {"api_key": message}},
            status_code=401,
        )
    response = RedirectResponse(target, status_code=303)
    set_session(request, response, secret)
    rotate_csrf(request)
    return with_console_headers(request, response)


@router.post("/ui/logout")
def logout(request: Request, csrf_token: str = Form(default="", alias=CSRF_FIELD)) -> Response:
    check_csrf(request, csrf_token)
    response = RedirectResponse("/ui/login", status_code=303)
    clear_session(response)
    return with_console_headers(request, response)
