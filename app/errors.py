"""RFC 9457 problem+json for every error, each naming the field at fault where there is one."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from distillery.backbones import BackboneError
from distillery.bundle import BundleError
from distillery.hyperparams import HyperparameterError
from distillery.tables import TableError, UnsupportedFormatError

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """An error for the client: HTTP status, a short title, a detail that says how to fix it."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        field: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.field = status, title, detail, field
        self.extra = extra or {}


def not_found(kind: str, identifier: str, field: str | None = None) -> Problem:
    return Problem(404, f"{kind} not found", f"no {kind} with id '{identifier}'", field=field)


def problem_response(
    request: Request,
    status: int,
    title: str,
    detail: str,
    field: str | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    if field is not None:
        body["field"] = field
    body.update(extra or {})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(request, exc.status, exc.title, exc.detail, exc.field, exc.extra)

    @app.exception_handler(TableError)
    async def _table(request: Request, exc: TableError) -> JSONResponse:
        if isinstance(exc, UnsupportedFormatError):
            return problem_response(request, 415, "Unsupported file type", str(exc), exc.field)
        return problem_response(request, 422, "Unusable table", str(exc), exc.field)

    @app.exception_handler(HyperparameterError)
    async def _hyperparameter(request: Request, exc: HyperparameterError) -> JSONResponse:
        return problem_response(
            request, 422, "Invalid hyperparameter", str(exc), f"hyperparameters.{exc.key}"
        )

    @app.exception_handler(BackboneError)
    async def _backbone(request: Request, exc: BackboneError) -> JSONResponse:
        return problem_response(request, 422, "Unusable checkpoint", str(exc))

    @app.exception_handler(BundleError)
    async def _bundle(request: Request, exc: BundleError) -> JSONResponse:
        return problem_response(request, 422, "Unusable model", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(part) for part in error["loc"] if part != "body"),
                "message": error["msg"],
            }
            for error in exc.errors()
        ]
        first = errors[0] if errors else {"field": None, "message": "invalid request"}
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem_response(
            request, 422, "Invalid request", detail, first["field"], {"errors": errors}
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(request, exc.status_code, str(exc.detail), str(exc.detail))
