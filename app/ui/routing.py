"""The console's route class: whatever a page's service refuses becomes an HTML page with the
API's own status, title and detail (a JSON problem for the scripts' polling endpoints), and a
request without a session goes to the login page."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute

from app.errors import PROBLEM_JSON
from app.ui.problems import is_known_problem, problem_for
from app.ui.render import page
from app.ui.session import CsrfRefused, LoginRequired, login_url

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def wants_json(request: Request) -> bool:
    """The scripts' endpoints answer JSON; every other console URL is a page."""
    return request.url.path.endswith(".json")


def error_page(request: Request, status: int, title: str, detail: str) -> Response:
    if wants_json(request):
        body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
        return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)
    return page(
        request,
        "error.html",
        {"status": status, "title": title, "detail": detail},
        status_code=status,
    )


class ConsoleRoute(APIRoute):
    def get_route_handler(self) -> Handler:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except LoginRequired as missing:
                if wants_json(request):
                    return error_page(request, 401, "Unauthorized", missing.reason)
                return RedirectResponse(login_url(missing.next_path), status_code=303)
            except CsrfRefused as refused:
                return error_page(request, 403, "Forbidden", str(refused))
            except Exception as exc:
                if not is_known_problem(request, exc):
                    raise
                problem = await problem_for(request, exc)
                return error_page(
                    request, int(problem["status"]), str(problem["title"]), str(problem["detail"])
                )

        return handler
