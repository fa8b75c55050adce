"""Domain errors to HTTP: ONE table of status, OpenAI error type and code; handlers that use it."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from scheduler.errors import (
    ConfigError,
    ForecastUnavailable,
    GridshiftError,
    InvalidInput,
    InvalidTransition,
    LimitExceeded,
    NotFound,
    PermissionDenied,
    PlanningError,
    QuotaExceeded,
    Unauthenticated,
)
from scheduler.store.disk import is_storage_fault

log = logging.getLogger(__name__)

# Domain error -> (HTTP status, OpenAI error type, default code). Looked up along the MRO, so the
# most specific class wins; GridshiftError is the catch-all.
ERROR_TABLE: dict[type[GridshiftError], tuple[int, str, str]] = {
    Unauthenticated: (401, "invalid_request_error", "invalid_api_key"),
    PermissionDenied: (403, "invalid_request_error", "permission_denied"),
    NotFound: (404, "invalid_request_error", "not_found"),
    LimitExceeded: (413, "invalid_request_error", "limit_exceeded"),
    QuotaExceeded: (429, "invalid_request_error", "quota_exceeded"),
    InvalidInput: (400, "invalid_request_error", "invalid_value"),
    InvalidTransition: (409, "invalid_request_error", "invalid_status"),
    ConfigError: (503, "server_error", "not_configured"),
    ForecastUnavailable: (503, "server_error", "forecast_unavailable"),
    PlanningError: (500, "server_error", "planning_failed"),
    GridshiftError: (500, "server_error", "internal_error"),
}

# Codes of errors raised by the framework itself (unknown route, wrong method, unparsable body).
_HTTP_CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}
_FASTAPI_PARSE_ERROR = "There was an error parsing the body"

# The error answers every operation may give, documented in the OpenAPI schema (not FastAPI's 422).
ERROR_STATUSES = {
    400: "Bad request: a parameter or the body is invalid (the message says which and why)",
    401: "Missing, unknown or revoked API key",
    403: "The key lacks the permission (admin endpoints)",
    404: "No such object for this tenant, or no such route",
    405: "Method not allowed on this path",
    409: "The object's status does not allow this (e.g. cancelling a finished batch)",
    413: "Body larger than GRIDSHIFT_MAX_JSON_BYTES, or upload larger than GRIDSHIFT_MAX_FILE_BYTES",
    429: "Over the tenant's rate, concurrency or quota limits (see Retry-After)",
    500: "An unexpected error (reported in the same envelope; the server log has the trace)",
    503: "Not configured, busy, or the store is unavailable (see Retry-After)",
    504: "The request took longer than GRIDSHIFT_REQUEST_TIMEOUT_S",
    507: "The server's storage is full or failing; nothing was stored (see Retry-After)",
}
# Seconds a client should wait after a 503 for an unavailable store, a 507 for a full disk.
STORE_RETRY_AFTER_S = 5
STORAGE_RETRY_AFTER_S = 60  # a full disk is not freed in seconds
_NULLABLE_STRING = {"anyOf": [{"type": "string"}, {"type": "null"}]}
OPENAI_ERROR_SCHEMA: dict[str, Any] = {
    "title": "OpenAIError",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string", "minLength": 1},
                "type": {"type": "string"},
                "param": _NULLABLE_STRING,
                "code": _NULLABLE_STRING,
            },
        }
    },
}


def _text(value: str) -> str:
    """``value`` made encodable as UTF-8 (a lone surrogate from a client becomes ``\\udxxx``)."""
    if value.isascii():
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(
    status: int, message: str, type_: str, code: str | None, param: str | None = None
) -> JSONResponse:
    """An OpenAI error envelope ``{"error": {message, type, param, code}}``."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    param = _text(param) if param is not None else None
    content = {"error": {"message": _text(message), "type": type_, "param": param, "code": code}}
    return JSONResponse(status_code=status, content=content, headers=headers)


def map_error(exc: GridshiftError) -> JSONResponse:
    """Translate a domain error with ``ERROR_TABLE`` (InvalidInput's first error gives param/code)."""
    status, type_, code = next(ERROR_TABLE[c] for c in type(exc).__mro__ if c in ERROR_TABLE)
    param = None
    if isinstance(exc, InvalidInput) and exc.errors:
        param = exc.errors[0].param
        code = exc.errors[0].code or code
    if status >= 500:
        log.error("request failed: %s", exc, exc_info=exc)
    response = error_response(status, str(exc), type_, code, param)
    if isinstance(exc, QuotaExceeded):
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


def unexpected_error_response(exc: BaseException) -> JSONResponse:
    """The answer to an error no route handled: 503 + Retry-After when the store is unavailable
    (connection dropped, pool exhausted), 507 + Retry-After on a storage fault (full disk), 400
    when the store refused a value, else a 500; always
    in OpenAI's envelope (never plain text)."""
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.OperationalError | sa_exc.InterfaceError):
        log.warning("store unavailable: %s", exc)
        response = error_response(
            503,
            "the database is unavailable or busy right now; nothing of this request was "
            f"stored, retry after {STORE_RETRY_AFTER_S} seconds",
            "server_error",
            "store_unavailable",
        )
        response.headers["Retry-After"] = str(STORE_RETRY_AFTER_S)
        return response
    if is_storage_fault(exc):  # full disk, quota, read-only data dir: nothing was stored
        log.error("storage fault: %r", exc)
        response = error_response(
            507,
            "the server's storage is full or failing right now (the data dir or its temporary "
            "space); nothing of this request was stored, retry after "
            f"{STORAGE_RETRY_AFTER_S} seconds",
            "server_error",
            "insufficient_storage",
        )
        response.headers["Retry-After"] = str(STORAGE_RETRY_AFTER_S)
        return response
    if isinstance(exc, sa_exc.DataError):
        return error_response(
            400,
            "a value in the request cannot be stored (too large a number, or a NUL or other "
            "character the database refuses); check the parameters",
            "invalid_request_error",
            "invalid_value",
        )
    log.error("unhandled error: %r", exc, exc_info=exc)
    return error_response(
        500,
        f"internal error ({type(exc).__name__}); the server log has the details",
        "server_error",
        "internal_error",
    )


async def _unexpected_handler(_request: Request, exc: Exception) -> JSONResponse:
    return unexpected_error_response(exc)


async def _domain_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GridshiftError)
    return map_error(exc)


async def _validation_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ("request " + str(first["loc"][0])) if first.get("loc") else "request"
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "invalid JSON")
        message = f"the request body is not valid JSON: {detail} (at character {first['loc'][-1]})"
        return error_response(400, message, "invalid_request_error", "invalid_request", None)
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    param = ".".join(loc) or None
    message = f"{param or where}: {first.get('msg', 'invalid value')}"
    return error_response(400, message, "invalid_request_error", "invalid_request", param)


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status, message = exc.status_code, str(exc.detail)
    path = request.url.path[:200]
    if status == 404 and message == "Not Found":
        message = f"nothing at {request.method} {path}: see /openapi.json for the endpoints"
    elif status == 405:
        message = f"method {request.method} is not allowed on {path}"
    elif message == _FASTAPI_PARSE_ERROR:
        ctype = request.headers.get("content-type") or "no Content-Type"
        message = (
            f"the request body could not be parsed as {ctype[:100]}: send UTF-8 JSON "
            "(Content-Type: application/json), or multipart form data for file uploads"
        )
    response = error_response(status, message, "invalid_request_error", _HTTP_CODES.get(status))
    for name, value in (exc.headers or {}).items():  # e.g. Allow on a 405
        response.headers[name] = value
    return response


def _document_errors(app: FastAPI) -> None:
    """Make ``/openapi.json`` list the error envelope answers instead of FastAPI's 422."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # cached on app.openapi_schema by FastAPI
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if "OpenAIError" in components:
            return schema
        components["OpenAIError"] = OPENAI_ERROR_SCHEMA
        answer = {"application/json": {"schema": {"$ref": "#/components/schemas/OpenAIError"}}}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                for status, description in ERROR_STATUSES.items():
                    responses.setdefault(
                        str(status), {"description": description, "content": answer}
                    )
        if "HTTPValidationError" not in str(schema.get("paths")):
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    """Answer domain, request validation and HTTP errors in OpenAI's envelope; document them."""
    app.add_exception_handler(GridshiftError, _domain_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(sa_exc.SQLAlchemyError, _unexpected_handler)
    app.add_exception_handler(Exception, _unexpected_handler)
    _document_errors(app)
