"""The ASGI layer in front of every route: query checks, authentication, limits, timeouts.

Order of the checks for one HTTP request, each answered in OpenAI's error envelope:

1. A query string with a NUL or a byte sequence that is not UTF-8 is a 400 (no store can hold it).
2. ``/v1/*``: the bearer key is resolved BEFORE any byte of the body is read (401 otherwise), so
   an anonymous client cannot make the server read, buffer or spool anything.
3. The caller's tenant is rate limited (token bucket) and its requests in flight are capped:
   429 with ``Retry-After``.
4. At most ``max_concurrent_requests`` requests run at once (the database pool is sized to
   match); a request that waits longer than ``queue_wait_s`` for a turn gets 503 + ``Retry-After``.
5. The body is byte-counted as it arrives: a declared ``Content-Length`` over the limit is a 413
   before reading, and a chunked body is refused with 413 the moment it crosses the limit
   (``max_json_bytes`` for JSON, ``max_file_bytes`` plus the multipart envelope for uploads,
   ``max_upload_part_bytes`` plus the envelope for a part of ``/v1/uploads``).
6. A request that has not started its answer after ``request_timeout_s`` gets a 504.

Every answer also carries the security headers (``SECURITY_HEADERS``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

import anyio
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler.api.errors import error_response
from scheduler.config import Settings
from scheduler.errors import GridshiftError
from scheduler.store.tenants import Caller

# Room for the multipart envelope around the file (headers, boundaries, the purpose field).
MULTIPART_OVERHEAD_BYTES = 64 * 1024
CALLER_STATE = "gridshift_caller"
UPLOAD_PATH = "/v1/files"
PARTS_PREFIX = "/v1/uploads/"  # POST /v1/uploads/{id}/parts: one part of a multipart upload

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

Authenticate = Callable[[Session, str], Caller]


class _Refused(Exception):
    """Raised inside the wrapped ``receive`` once the guard has answered on the app's behalf."""


@dataclass
class TenantLimiter:
    """Per-tenant token bucket (requests per minute) and cap on requests in flight.

    In memory, per server process: with several ``serve`` processes each enforces its share.
    """

    per_minute: int
    max_in_flight: int
    _tokens: dict[str, tuple[float, float]] = field(default_factory=dict)
    _in_flight: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self, tenant: str) -> float:
        """Take a turn for ``tenant``; return 0 if granted, else the seconds to wait."""
        now = time.monotonic()
        rate = self.per_minute / 60.0
        with self._lock:
            if self._in_flight.get(tenant, 0) >= self.max_in_flight:
                return 1.0
            tokens, last = self._tokens.get(tenant, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens < 1.0:
                self._tokens[tenant] = (tokens, now)
                return (1.0 - tokens) / rate
            self._tokens[tenant] = (tokens - 1.0, now)
            self._in_flight[tenant] = self._in_flight.get(tenant, 0) + 1
            return 0.0

    def release(self, tenant: str) -> None:
        """End a turn taken with ``acquire``."""
        with self._lock:
            left = self._in_flight.get(tenant, 1) - 1
            if left <= 0:
                self._in_flight.pop(tenant, None)
            else:
                self._in_flight[tenant] = left


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


def _bearer(headers: dict[bytes, bytes]) -> str | None:
    scheme, _, key = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def _retry(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class RequestGuard:
    """Pure ASGI middleware applying the checks in this module's docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        authenticate: Authenticate,
    ) -> None:
        self.app = app
        self.settings = settings
        self.sessions = sessions
        self.authenticate = authenticate
        self.tenants = TenantLimiter(
            settings.tenant_requests_per_minute, settings.tenant_max_concurrent
        )
        self.slots = anyio.CapacityLimiter(settings.max_concurrent_requests)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secure(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        problem = bad_query(scope.get("query_string", b""))
        if problem:
            await self._answer(scope, receive, send_secure, 400, problem, "invalid_request")
            return
        caller: Caller | None = None
        if scope["path"].startswith("/v1/"):
            caller = await self._caller(scope, receive, send_secure)
            if caller is None:
                return
            wait = self.tenants.acquire(caller.tenant_id)
            if wait:
                message = (
                    f"tenant {caller.tenant_name!r} is over its request rate or concurrency "
                    f"limit (GRIDSHIFT_TENANT_REQUESTS_PER_MINUTE="
                    f"{self.settings.tenant_requests_per_minute}, "
                    f"GRIDSHIFT_TENANT_MAX_CONCURRENT={self.settings.tenant_max_concurrent}); "
                    "retry after the Retry-After header's seconds"
                )
                await self._answer(
                    scope, receive, send_secure, 429, message, "rate_limit_exceeded", _retry(wait)
                )
                return
        try:
            await self._run(scope, receive, send_secure)
        finally:
            if caller is not None:
                self.tenants.release(caller.tenant_id)

    async def _caller(self, scope: Scope, receive: Receive, send: Send) -> Caller | None:
        key = _bearer(dict(scope["headers"]))
        if key is None:
            await self._answer(
                scope,
                receive,
                send,
                401,
                "missing API key: send 'Authorization: Bearer <key>' (OpenAI(api_key=...) does "
                "this; create a key with `gridshift keys create`)",
                "invalid_api_key",
            )
            return None

        def resolve() -> Caller:
            with self.sessions() as session:
                return self.authenticate(session, key)

        try:
            caller = await anyio.to_thread.run_sync(resolve, limiter=self.slots)
        except GridshiftError as exc:
            from scheduler.api.errors import map_error

            await map_error(exc)(scope, receive, send)
            return None
        except Exception as exc:  # the store is down: the error handlers' 503 rule applies
            from scheduler.api.errors import unexpected_error_response

            await unexpected_error_response(exc)(scope, receive, send)
            return None
        scope.setdefault("state", {})[CALLER_STATE] = caller
        return caller

    def _limit(self, scope: Scope) -> tuple[int, str, str, str | None]:
        """The body limit of this request, what to say over it, its error code and param."""
        path = scope["path"]
        if scope["method"] == "POST" and path == UPLOAD_PATH:
            return (
                self.settings.max_file_bytes + MULTIPART_OVERHEAD_BYTES,
                f"the upload exceeds the file limit of {self.settings.max_file_bytes} bytes "
                "(GRIDSHIFT_MAX_FILE_BYTES); split the requests into several files, or send "
                "a larger file in parts (POST /v1/uploads)",
                "file_too_large",
                "file",
            )
        if scope["method"] == "POST" and path.startswith(PARTS_PREFIX) and path.endswith("/parts"):
            return (
                self.settings.max_upload_part_bytes + MULTIPART_OVERHEAD_BYTES,
                f"the part exceeds the part limit of {self.settings.max_upload_part_bytes} "
                "bytes (GRIDSHIFT_MAX_UPLOAD_PART_BYTES); send smaller parts",
                "file_too_large",
                "data",
            )
        limit = self.settings.max_json_bytes
        what = (
            f"the request body exceeds {limit} bytes (GRIDSHIFT_MAX_JSON_BYTES); "
            "send large inputs as a file (POST /v1/files)"
        )
        return limit, what, "request_too_large", None

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit, what, code, param = self._limit(scope)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            await self._answer(scope, receive, send, 413, what, code, param=param)
            return
        started = False
        refused = False
        received = 0

        async def counted_receive() -> Message:
            nonlocal received, refused
            if refused:
                raise _Refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:
                        await self._answer(scope, receive, send, 413, what, code, param=param)
                    raise _Refused
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
                cancel.deadline = math.inf  # streaming answers may take as long as they need
            await send(message)

        try:
            with anyio.fail_after(self.settings.queue_wait_s):
                await self.slots.acquire()
        except TimeoutError:
            await self._answer(
                scope,
                receive,
                send,
                503,
                f"the server is at its limit of {self.settings.max_concurrent_requests} requests "
                "in progress (GRIDSHIFT_MAX_CONCURRENT_REQUESTS); retry after Retry-After seconds",
                "server_busy",
                _retry(2),
            )
            return
        try:
            with anyio.CancelScope() as cancel:
                cancel.deadline = anyio.current_time() + self.settings.request_timeout_s
                try:
                    await self.app(scope, counted_receive, tracked_send)
                except _Refused:
                    pass
                except Exception:
                    if not refused:
                        raise
            if cancel.cancelled_caught and not started:
                await self._answer(
                    scope,
                    receive,
                    send,
                    504,
                    f"the request took longer than {self.settings.request_timeout_s:g} s "
                    "(GRIDSHIFT_REQUEST_TIMEOUT_S); retry, or send less per request",
                    "timeout",
                )
        finally:
            self.slots.release()

    @staticmethod
    async def _answer(
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
        type_ = "invalid_request_error" if status < 500 else "server_error"
        if status == 429:
            type_ = "rate_limit_error" if code == "rate_limit_exceeded" else type_
        response = error_response(status, message, type_, code, param)
        for name, value in (headers or {}).items():
            response.headers[name] = value
        if status == 413:
            response.headers["Connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)


def install_guard(app: Any, settings: Settings, authenticate: Authenticate) -> None:
    """Put ``RequestGuard`` outermost in ``app`` (a FastAPI app with ``state.sessions``)."""
    app.add_middleware(
        RequestGuard, settings=settings, sessions=app.state.sessions, authenticate=authenticate
    )
