"""Who is using the console, and proof that a form came from one of its own pages.

With auth on, the login page takes an API key and keeps it in the `distillery_session` cookie:
HttpOnly (page scripts never see it), SameSite=Strict (no other site's page sends it), Path=/ui
(the /v1 API keeps taking only `Authorization: Bearer`, so it needs no CSRF defence), and Secure
when the request came over HTTPS. The key is checked against the database on every request, as
a bearer key is, so revoking it ends every console session at once.

Every state-changing form carries a CSRF token: a random value the server also sets as the
HttpOnly, SameSite=Strict `distillery_csrf` cookie (double submit). A page of another origin can
neither read the cookie nor, thanks to SameSite, send it; a POST whose token does not match the
cookie, or whose Origin header names another host, is refused. Login rotates the token.
"""

from __future__ import annotations

import secrets
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from app.deps import SessionDep
from domain.auth import LOCAL_CALLER, Caller, authenticate
from domain.orm import ApiKey

SESSION_COOKIE = "distillery_session"
CSRF_COOKIE = "distillery_csrf"
CSRF_FIELD = "csrf_token"
COOKIE_PATH = "/ui"


class LoginRequired(Exception):
    """Auth is on and the request carries no usable session: pages go to the login page."""

    def __init__(self, next_path: str, reason: str) -> None:
        super().__init__(reason)
        self.next_path, self.reason = next_path, reason


class CsrfRefused(Exception):
    """A state-changing request without the token of one of the console's own pages."""


def _is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def session_caller(request: Request, session: Session) -> Caller:
    """The caller behind the session cookie; with auth off, the local caller."""
    if not request.app.state.settings.auth_enabled:
        return LOCAL_CALLER
    secret = request.cookies.get(SESSION_COOKIE)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if not secret:
        raise LoginRequired(target, "sign in with an API key to use the console")
    caller = authenticate(session, secret)
    if caller is None:
        raise LoginRequired(target, "the API key is unknown or revoked; sign in with another")
    return caller


def console_caller(request: Request, session: SessionDep) -> Caller:
    caller = session_caller(request, session)
    # The page header says which key is signed in.
    request.state.console_key_name = key_name(session, caller)
    return caller


ConsoleCaller = Annotated[Caller, Depends(console_caller)]


def key_name(session: Session, caller: Caller) -> str | None:
    """The signed-in key's name, for the header; None with auth off."""
    if caller.key_id is None:
        return None
    key = session.get(ApiKey, caller.key_id)
    return key.name if key is not None else None


def csrf_token(request: Request) -> str:
    """This browser's CSRF token, made on its first console page (`remember_csrf` sets it)."""
    token = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf", None)
    if not token:
        token = secrets.token_urlsafe(32)
        request.state.new_csrf = token
    return token


def remember_csrf(request: Request, response: Response) -> None:
    """Set the CSRF cookie on `response` when this request made a new token."""
    token = getattr(request.state, "new_csrf", None)
    if token:
        _set_console_cookie(request, response, CSRF_COOKIE, token)


def rotate_csrf(request: Request) -> str:
    """A fresh token (after login), so a token planted before sign-in is worth nothing."""
    token = secrets.token_urlsafe(32)
    request.state.new_csrf = token
    return token


def check_csrf(request: Request, submitted: str | None) -> None:
    """Refuse a POST that did not come from a form of this console."""
    origin = request.headers.get("origin")
    # Behind a proxy that rewrites Host, the browser's host arrives as X-Forwarded-Host.
    hosts = {request.headers.get("host"), request.headers.get("x-forwarded-host")}
    if origin and origin != "null" and urlsplit(origin).netloc not in hosts:
        raise CsrfRefused(f"the form was posted from another site ({origin})")
    expected = request.cookies.get(CSRF_COOKIE)
    if not expected or not submitted or not secrets.compare_digest(expected, submitted):
        raise CsrfRefused("the form is stale or did not come from this console; reload the page")


def set_session(request: Request, response: Response, secret: str) -> None:
    _set_console_cookie(request, response, SESSION_COOKIE, secret)


def _set_console_cookie(request: Request, response: Response, name: str, value: str) -> None:
    """HttpOnly, SameSite=Strict, limited to /ui, and Secure when the page came over HTTPS."""
    response.set_cookie(
        name, value, httponly=True, samesite="strict", secure=_is_https(request), path=COOKIE_PATH
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)


def login_url(next_path: str) -> str:
    return f"/ui/login?next={quote(next_path, safe='/')}"


def safe_next(raw: str | None) -> str:
    """Where to go after login: only a path of this console (no open redirect)."""
    if raw and raw.startswith("/ui") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return "/ui/jobs"
