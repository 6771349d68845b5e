"""Errors as RFC 9457 problem details, translated here once for every endpoint."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from kinloop.api.schemas import Problem
from kinloop.domain.errors import (
    IdempotencyConflict,
    InvalidInput,
    KinloopError,
    NotFound,
    NotInitialised,
    ProgramInvalid,
    Refused,
)
from kinloop.services.keys import Forbidden, Unauthorized

log = logging.getLogger("kinloop.api")


class Pages(Protocol):
    """Where errors on web pages are rendered (the module `kinloop.web.errors`)."""

    def claims(self, request: Request) -> bool: ...

    def reply(self, request: Request, status: int, code: str, detail: str) -> Response: ...


PROBLEM = "application/problem+json"


def problem(status: int, code: str, detail: str, *, field: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://kinloop.dev/problems/{code}",
        "title": code.replace("_", " ").capitalize(),
        "status": status,
        "code": code,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def status_of(exc: KinloopError) -> int:
    """The HTTP status of a domain error."""
    if isinstance(exc, Unauthorized):
        return 401
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, IdempotencyConflict | Refused):
        return 409
    if isinstance(exc, ProgramInvalid | InvalidInput):
        return 422
    if isinstance(exc, NotInitialised):
        return 503
    return 400


# Pydantic names the member of a union it tried ("amount.str", "amount.int"); the field is "amount".
_UNION_TAGS = {"str", "int", "float", "bool"}


def _field(loc: tuple[Any, ...]) -> str:
    parts = [
        str(p)
        for p in loc
        if p not in ("body", "query", "path", "header") and str(p) not in _UNION_TAGS and "[" not in str(p)
    ]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out


# What each status means, for the schema; every /v1 operation documents these replies.
STATUSES = {
    400: "The body is not valid JSON (`malformed_json`).",
    401: "No key, or a key or member token that is unknown, revoked or expired (`unauthorized`).",
    403: "The key's scope does not allow this (`forbidden`).",
    404: "Nothing with that id in the key's program (`unknown_member`, `unknown_event`, `not_found`, ...).",
    409: "Refused: the balance is short, the currency is not spendable, the event is already reversed,"
    " or an idempotency key was used for another request.",
    413: "The body is larger than the server accepts (`payload_too_large`).",
    415: "The body is not sent as JSON (`unsupported_media_type`).",
    422: "The request is well-formed JSON but not acceptable; `field` and `errors` say where.",
    429: "Too many requests for this key; retry after `Retry-After` seconds (`rate_limited`).",
}
WITH_BODY = {400, 413, 415}
CHANGES = {409}


def document(schema: dict[str, Any]) -> dict[str, Any]:
    """Describe the problem responses of every /v1 operation in an OpenAPI document, in place
    of FastAPI's default validation error (which this API never sends)."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    content = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, operations in schema.get("paths", {}).items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for status, description in STATUSES.items():
                if status in WITH_BODY and "requestBody" not in operation:
                    continue
                if status in CHANGES and method == "get":
                    continue
                given = responses.get(str(status), {})
                responses[str(status)] = {"description": given.get("description", description), "content": content}
            operation["responses"] = dict(sorted(responses.items()))
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return schema


def install(app: FastAPI, pages: Pages | None = None) -> None:
    """Register the handlers that turn every error into a problem response, and document them.

    `pages` renders errors on the web pages (`kinloop.web.errors`): a request it claims
    gets an HTML page with the same status and code instead of problem JSON."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    def web(request: Request, status: int, code: str, detail: str) -> Response | None:
        return pages.reply(request, status, code, detail) if pages and pages.claims(request) else None

    @app.exception_handler(KinloopError)
    async def _domain(request: Request, exc: KinloopError) -> Response:
        if (page := web(request, status_of(exc), exc.code, exc.detail)) is not None:
            return page
        extra: dict[str, Any] = {}
        if isinstance(exc, ProgramInvalid):
            extra["errors"] = [{"path": i.path, "message": i.message} for i in exc.issues]
        response = problem(status_of(exc), exc.code, exc.detail, field=exc.field, **extra)
        if isinstance(exc, Unauthorized):
            response.headers["WWW-Authenticate"] = 'Bearer realm="kinloop"'
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if (
            page := web(request, 422, "invalid_request", "the form is missing a field or has a wrong value")
        ) is not None:
            return page
        if isinstance(exc.body, bytes):  # FastAPI reads JSON only when the content type says so
            return problem(415, "unsupported_media_type", "send the body as JSON, with Content-Type: application/json")
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return problem(400, "malformed_json", "the request body is not valid JSON")
        first = errors[0] if errors else {}
        details = [{"field": _field(tuple(e.get("loc", ()))), "message": str(e.get("msg", ""))} for e in errors]
        return problem(
            422,
            "invalid_request",
            f"{_field(tuple(first.get('loc', ())))}: {first.get('msg', 'invalid')}" if first else "invalid request",
            field=_field(tuple(first.get("loc", ()))) or None,
            errors=details,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if (page := web(request, exc.status_code, "http_error", str(exc.detail))) is not None:
            return page
        codes = {
            400: "malformed_json",  # FastAPI's only 400: a body it could not parse (e.g. nested too deep)
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
            429: "rate_limited",
        }
        response = problem(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))
        for k, v in (exc.headers or {}).items():
            response.headers[k] = v
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        if (
            page := web(request, 500, "internal_error", "an unexpected error occurred; it has been logged")
        ) is not None:
            return page
        return problem(500, "internal_error", "an unexpected error occurred; it has been logged")
