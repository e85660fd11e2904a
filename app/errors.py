"""RFC 9457 problem+json for every error, each naming the field at fault where there is one.

Every route declares the problems it can answer with (`problem_responses`), so the OpenAPI
document describes error bodies as exactly as it describes successes.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from distillery.backbones import BackboneError
from distillery.bundle import BundleError
from distillery.hyperparams import HyperparameterError
from distillery.plan import PlanError
from distillery.tables import TableError, UnsupportedFormatError
from distillery.variants import VariantError
from domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    TooLarge,
    Unavailable,
    Unsupported,
)

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("distillery.api")


# The one place domain errors become HTTP statuses.
DOMAIN_STATUS: dict[type[DomainError], int] = {
    Invalid: 422,
    NotFound: 404,
    Conflict: 409,
    Forbidden: 403,
    TooLarge: 413,
    Unsupported: 415,
    Unavailable: 503,
}


class Problem(Exception):
    """An error of the HTTP layer itself (auth, content negotiation, body limits): status, a
    short title, a detail that says how to fix it. The services raise domain errors instead."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        field: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.field = status, title, detail, field
        self.extra = extra or {}
        self.headers = headers


def problem_response(
    request: Request,
    status: int,
    title: str,
    detail: str,
    field: str | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
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
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            request, exc.status, exc.title, exc.detail, exc.field, exc.extra, exc.headers
        )

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        status = next(code for kind, code in DOMAIN_STATUS.items() if isinstance(exc, kind))
        return problem_response(request, status, exc.title, exc.detail, exc.field, exc.extra)

    @app.exception_handler(PlanError)
    async def _plan(request: Request, exc: PlanError) -> JSONResponse:
        return problem_response(request, 422, exc.title, str(exc), exc.field)

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

    @app.exception_handler(VariantError)
    async def _variant(request: Request, exc: VariantError) -> JSONResponse:
        # e.g. int8 asked of a server that runs models on a GPU: the variant exists, not here.
        return problem_response(request, 409, "Variant not servable here", str(exc), "variant")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field_name(error), "message": _fix_hint(error)} for error in exc.errors()
        ]
        first = errors[0] if errors else {"field": "body", "message": "invalid request"}
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem_response(
            request, 422, "Invalid request", detail, first["field"], {"errors": errors}
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = getattr(exc, "title", None) or HTTPStatus(exc.status_code).phrase
        detail = str(exc.detail)
        if exc.status_code == 400 and "parsing the body" in detail:
            detail = (
                "the request body could not be parsed; send multipart/form-data with a 'file' "
                "part for uploads, or a JSON object with content-type application/json"
            )
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405 and (methods := allowed_methods(request)) is not None:
            # Starlette's Allow names only the methods of the one route that matched the path;
            # the resource is the path, so name every method any route serves on it.
            headers = {**(headers or {}), "Allow": ", ".join(methods)}
        return problem_response(request, exc.status_code, title, detail, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not the client's doing: log it whole, tell the client only that it happened.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            request,
            500,
            "Internal Server Error",
            "the server failed on this request; it has been logged",
        )


def allowed_methods(request: Request) -> list[str] | None:
    """Every method the app serves on this request's path, read from its OpenAPI document (the
    routes of all routers, as one resource); None for a path the document does not have."""
    path = request.url.path
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods = [m.upper() for m in operations if m.upper() in HTTP_METHODS]
            if "GET" in methods:
                methods.append("HEAD")
            return sorted(methods, key=HTTP_METHODS.index)
    return None


HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]


def _field_name(error: Any) -> str:
    # ("body", "hyperparameters", "x") -> "hyperparameters.x"; ("query", "limit") -> "limit";
    # ("header", "idempotency-key") -> "Idempotency-Key".
    if error.get("type") == "json_invalid":
        return "body"
    location = [str(part) for part in error.get("loc", ())]
    if location and location[0] in ("body", "query", "path", "header", "cookie"):
        source, location = location[0], location[1:]
        if source == "header":
            location = ["-".join(w.capitalize() for w in p.split("-")) for p in location]
    return ".".join(location) or "body"


# What a value that misses a field's `pattern` gets told instead of the regular expression.
PATTERN_HINTS = {
    "cursor": "cursor is not one this API returned; use next_cursor from the last page",
    "delimiter": "delimiter must be one character other than a quote or line break; "
    "e.g. delimiter=; or delimiter=|",
    "path": "path must be an absolute path on the server",
    "text_columns": "name at least one input column, e.g. question,sentence",
}


def _fix_hint(error: Any) -> str:
    message = str(error.get("msg", "invalid value"))
    kind = error.get("type", "")
    if kind == "string_pattern_mismatch":
        location = error.get("loc", ())
        hint = PATTERN_HINTS.get(str(location[-1])) if location else None
        if hint is not None:
            return hint
    if kind == "missing":
        return "required; send it"
    if kind == "extra_forbidden":
        return "unknown field; remove it (see the schema at /docs for the fields)"
    if kind == "json_invalid":
        return f"not valid JSON ({error.get('ctx', {}).get('error', message)})"
    return message


class ProblemFieldError(BaseModel):
    field: str = Field(description="Dotted name of the request field at fault")
    message: str = Field(description="What is wrong with it and how to fix it")


class ProblemBody(BaseModel):
    """RFC 9457 problem details, with `field` naming the request field to fix."""

    type: str = Field(description="Always about:blank: the status and title say what happened")
    title: str = Field(description="Short summary of the problem kind")
    status: int = Field(description="HTTP status code")
    detail: str = Field(description="What went wrong with this request and how to fix it")
    instance: str = Field(description="The request path")
    field: str | None = Field(default=None, description="The request field at fault")
    errors: list[ProblemFieldError] | None = Field(
        default=None, description="Every invalid field, for request validation errors"
    )

    model_config = {"extra": "allow"}


PROBLEM_EXAMPLES: dict[int, tuple[str, str, str | None]] = {
    400: ("Bad Request", "the request body could not be parsed; send multipart/form-data", None),
    401: ("Unauthorized", "send an API key as 'Authorization: Bearer dk_...'", None),
    403: ("Forbidden", "registering server-side paths is turned off on this server", "path"),
    404: ("dataset not found", "no dataset with id 'ds_0123456789abcdef0123'", None),
    409: ("In use", "dataset 'ds_0123...' is used by queued or running job(s) job_...", None),
    413: ("File too large", "the file is over the 536870912 byte limit", "file"),
    415: ("Unsupported file type", "unsupported file type '.xlsx'; use one of: .csv, ...", "file"),
    422: (
        "Unusable table",
        "label column 'lable' not found; columns are: question, sentence, label",
        "label",
    ),
    500: ("Internal Server Error", "the server failed on this request; it has been logged", None),
    503: ("Queue unavailable", "the job queue is not reachable; try again later", None),
}


def _problem_content(status: int) -> dict[str, Any]:
    title, detail, field = PROBLEM_EXAMPLES.get(
        status, (HTTPStatus(status).phrase, "what went wrong and how to fix it", None)
    )
    example: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": "/v1/...",
    }
    if field is not None:
        example["field"] = field
    return {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}, "example": example}}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these statuses, each a problem+json body."""
    return {
        status: {"description": HTTPStatus(status).phrase, "content": _problem_content(status)}
        for status in statuses
    }


def document_problems(openapi: dict[str, Any]) -> dict[str, Any]:
    """Make the OpenAPI document say what the error handlers do, for every route:

    - every 4xx/5xx response is problem+json with the Problem schema (FastAPI's own 422 entry
      describes a JSON body these handlers never send);
    - an operation on a path with an `{..._id}` parameter can answer 404 (no such id, or not
      yours), and one with a request body can answer 400 (a body that does not parse at all).
    """
    schema = ProblemBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(schema.pop("$defs", {}))
    schemas["Problem"] = schema
    for path, operations in openapi.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "_id}" in path and "404" not in responses:
                responses["404"] = problem_responses(404)[404]
            if "requestBody" in operation and "400" not in responses:
                responses["400"] = problem_responses(400)[400]
            for status, response in responses.items():
                if status[0] in "45":
                    response["content"] = _problem_content(int(status))
                    if status == "422":
                        response["description"] = "Invalid request: the field to fix is named"
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    return openapi
