"""Small HTTP pieces of the request guard: headers every answer carries, query checks, the
bearer key, and the guard's own answers in OpenAI's error envelope."""

from __future__ import annotations

import math
from urllib.parse import unquote_to_bytes

from starlette.types import Receive, Scope, Send

from scheduler.api.errors import error_response

# The dashboard ships its own script and style (no inline code, no CDN), so 'self' suffices.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
# Tenant data (every /v1 answer) must not be kept by browsers or shared caches.
NO_STORE = (b"cache-control", b"no-store")


def bad_query(query_string: bytes) -> str | None:
    """Why a raw query string cannot be accepted (NUL, not UTF-8), or None if it is fine."""
    if not query_string:
        return None
    raw = unquote_to_bytes(query_string.replace(b"+", b" "))
    if b"\x00" in raw:
        return "a query parameter contains a NUL character (%00); remove it"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "a query parameter is not valid UTF-8 once percent-decoded; encode it as UTF-8"
    return None


def bearer(headers: dict[bytes, bytes]) -> str | None:
    """The bearer key of a request's headers, or None."""
    scheme, _, key = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def retry(seconds: float) -> dict[str, str]:
    """A ``Retry-After`` header of at least one whole second."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


async def answer(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    message: str,
    code: str,
    headers: dict[str, str] | None = None,
    *,
    param: str | None = None,
) -> None:
    """Answer on the app's behalf in OpenAI's envelope (413s close the unread connection)."""
    type_ = "invalid_request_error" if status < 500 else "server_error"
    if status == 429:
        type_ = "rate_limit_error" if code == "rate_limit_exceeded" else type_
    response = error_response(status, message, type_, code, param)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    if status == 413:
        response.headers["Connection"] = "close"  # the rest of the body is not read
    await response(scope, receive, send)
