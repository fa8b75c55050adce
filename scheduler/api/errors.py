"""Domain errors to HTTP: ONE table of status, OpenAI error type and code; handlers that use it."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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
    Unauthenticated,
)

log = logging.getLogger(__name__)

# Domain error -> (HTTP status, OpenAI error type, default code). Looked up along the MRO, so the
# most specific class wins; GridshiftError is the catch-all.
ERROR_TABLE: dict[type[GridshiftError], tuple[int, str, str]] = {
    Unauthenticated: (401, "invalid_request_error", "invalid_api_key"),
    PermissionDenied: (403, "invalid_request_error", "permission_denied"),
    NotFound: (404, "invalid_request_error", "not_found"),
    LimitExceeded: (413, "invalid_request_error", "limit_exceeded"),
    InvalidInput: (400, "invalid_request_error", "invalid_value"),
    InvalidTransition: (409, "invalid_request_error", "invalid_status"),
    ConfigError: (503, "server_error", "not_configured"),
    ForecastUnavailable: (503, "server_error", "forecast_unavailable"),
    PlanningError: (500, "server_error", "planning_failed"),
    GridshiftError: (500, "server_error", "internal_error"),
}


def error_response(
    status: int, message: str, type_: str, code: str | None, param: str | None = None
) -> JSONResponse:
    """An OpenAI error envelope ``{"error": {message, type, param, code}}``."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(
        status_code=status,
        content={"error": {"message": message, "type": type_, "param": param, "code": code}},
        headers=headers,
    )


def map_error(exc: GridshiftError) -> JSONResponse:
    """Translate a domain error with ``ERROR_TABLE`` (InvalidInput's first error gives param/code)."""
    status, type_, code = next(ERROR_TABLE[c] for c in type(exc).__mro__ if c in ERROR_TABLE)
    param = None
    if isinstance(exc, InvalidInput) and exc.errors:
        param = exc.errors[0].param
        code = exc.errors[0].code or code
    if status >= 500:
        log.error("request failed: %s", exc, exc_info=exc)
    return error_response(status, str(exc), type_, code, param)


async def _domain_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GridshiftError)
    return map_error(exc)


async def _validation_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    param = ".".join(loc) or None
    message = f"{param}: {first.get('msg', 'invalid request')}" if param else "invalid request"
    return error_response(400, message, "invalid_request_error", "invalid_request", param)


async def _http_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, str(exc.detail), "invalid_request_error", None)


def install_error_handlers(app: FastAPI) -> None:
    """Answer domain errors, request validation errors and HTTP errors in OpenAI's envelope."""
    app.add_exception_handler(GridshiftError, _domain_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
