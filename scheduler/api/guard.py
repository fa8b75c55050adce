"""The ASGI layer in front of every route: query checks, authentication, limits, timeouts.

Order of the checks for one HTTP request, each answered in OpenAI's error envelope:

1. A query string with a NUL or a byte sequence that is not UTF-8 is a 400 (no store can hold it).
2. ``/healthz`` (liveness) is answered at once: no slot, no database, never queued behind work.
3. ``/v1/*``: the bearer key is resolved BEFORE any byte of the body is read (401 otherwise), so
   an anonymous client cannot make the server read, buffer or spool anything. The lookup has its
   own few threads and waits at most ``queue_wait_s`` for one (503 + ``Retry-After``).
4. The caller's tenant is rate limited (token bucket) and its requests in flight are capped,
   counted in the store every replica shares (``scheduler/api/limits.py``): 429 + ``Retry-After``.
5. An upload body (``POST /v1/files``) is received into the data directory's spool holding an
   upload slot, not a request slot (``scheduler/api/spool.py``): 413 past the limit, 507 when the
   disk is full, 504 when it does not arrive within ``request_timeout_s``.
6. At most ``max_concurrent_requests`` requests run at once (the database pool is sized to
   match); a request that waits longer than ``queue_wait_s`` for a turn gets 503 + ``Retry-After``.
   ``/readyz`` has two slots of its own.
7. Other bodies are byte-counted as they arrive: a declared ``Content-Length`` over the limit is
   a 413 before reading, and a chunked body is refused with 413 the moment it crosses the limit
   (``max_json_bytes`` for JSON, ``max_upload_part_bytes`` plus the envelope for a part of
   ``/v1/uploads``).
8. A request that has not started its answer after ``request_timeout_s`` gets a 504.

Every answer carries the security headers (``SECURITY_HEADERS``); ``/v1`` answers also carry
``Cache-Control: no-store``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import anyio
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler.api.errors import STORAGE_RETRY_AFTER_S
from scheduler.api.guard_http import NO_STORE, SECURITY_HEADERS, answer, bad_query, bearer, retry
from scheduler.api.limits import MemoryLimits, TenantLimits, Turn
from scheduler.api.spool import (
    SPOOL_STATE,
    Outcome,
    consumed,
    free_bytes,
    receive_to_spool,
    remove_spool,
    spool_path,
)
from scheduler.config import Settings
from scheduler.errors import GridshiftError
from scheduler.store.tenants import Caller

log = logging.getLogger(__name__)

# Room for the multipart envelope around the file (headers, boundaries, the purpose field).
MULTIPART_OVERHEAD_BYTES = 64 * 1024
CALLER_STATE = "gridshift_caller"
UPLOAD_PATH = "/v1/files"
PARTS_PREFIX = "/v1/uploads/"  # POST /v1/uploads/{id}/parts: one part of a multipart upload
LIVENESS_PATHS = frozenset({"/healthz"})
PROBE_PATHS = frozenset({"/readyz"})
# Threads (and database connections) for key lookups, and slots for readiness probes.
AUTH_SLOTS = 4
PROBE_SLOTS = 2
# A shared limits store answers within this, else this process's own limits decide.
LIMITS_TIMEOUT_S = 2.0
LIMITS_WARN_EVERY_S = 60.0

Authenticate = Callable[[Session, str], Caller]


class _Refused(Exception):
    """Raised inside the wrapped ``receive`` once the guard has answered on the app's behalf."""


class RequestGuard:
    """Pure ASGI middleware applying the checks in this module's docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        authenticate: Authenticate,
        limits: TenantLimits | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.sessions = sessions
        self.authenticate = authenticate
        self.local = MemoryLimits(
            settings.tenant_requests_per_minute, settings.tenant_max_concurrent
        )
        self.limits: TenantLimits = limits or self.local
        self.slots = anyio.CapacityLimiter(settings.max_concurrent_requests)
        self.auth_slots = anyio.CapacityLimiter(AUTH_SLOTS)
        self.probe_slots = anyio.CapacityLimiter(PROBE_SLOTS)
        self.upload_slots = anyio.CapacityLimiter(settings.max_concurrent_uploads)
        self._warned_at = -math.inf

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        tenant_data = path.startswith("/v1/")

        async def send_secure(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *SECURITY_HEADERS]
                if tenant_data and not any(k.lower() == NO_STORE[0] for k, _ in headers):
                    headers.append(NO_STORE)
                message["headers"] = headers
            await send(message)

        problem = bad_query(scope.get("query_string", b""))
        if problem:
            await answer(scope, receive, send_secure, 400, problem, "invalid_request")
        elif path in LIVENESS_PATHS:
            await self.app(scope, receive, send_secure)
        elif not tenant_data:
            slots = self.probe_slots if path in PROBE_PATHS else self.slots
            await self._run(scope, receive, send_secure, slots)
        else:
            await self._tenant_request(scope, receive, send_secure)

    async def _tenant_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        caller = await self._caller(scope, receive, send)
        if caller is None:
            return
        turn, store = await self._turn(caller.tenant_id)
        if not turn.granted:
            message = (
                f"tenant {caller.tenant_name!r} is over its request rate or concurrency "
                f"limit (GRIDSHIFT_TENANT_REQUESTS_PER_MINUTE="
                f"{self.settings.tenant_requests_per_minute}, "
                f"GRIDSHIFT_TENANT_MAX_CONCURRENT={self.settings.tenant_max_concurrent}); "
                "retry after the Retry-After header's seconds"
            )
            await answer(
                scope, receive, send, 429, message, "rate_limit_exceeded", retry(turn.wait_s)
            )
            return
        ended = False

        async def end_turn() -> None:
            nonlocal ended
            if ended:
                return
            ended = True
            with anyio.CancelScope(shield=True), anyio.move_on_after(LIMITS_TIMEOUT_S):
                try:
                    await store.release(caller.tenant_id, turn.token)
                except Exception as exc:  # the turn's lease ends it
                    self._warn(store, exc)

        async def send_ending(message: Message) -> None:
            # The turn ends before the answer's last bytes leave, so nothing of the request
            # (a shared store's round trip) runs after the client has its answer.
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                await end_turn()
            await send(message)

        try:
            if scope["method"] == "POST" and scope["path"] == UPLOAD_PATH:
                await self._upload(scope, receive, send_ending)
            else:
                await self._run(scope, receive, send_ending, self.slots)
        finally:
            await end_turn()

    def _warn(self, store: TenantLimits, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at >= LIMITS_WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "tenant limits store %r did not answer (%r): this process counts its own "
                "requests until it does (warned at most every %g s)",
                store.name,
                exc,
                LIMITS_WARN_EVERY_S,
            )

    async def _turn(self, tenant: str) -> tuple[Turn, TenantLimits]:
        if self.limits is self.local:
            return self.local.take(tenant), self.local
        try:
            with anyio.fail_after(LIMITS_TIMEOUT_S):
                return await self.limits.acquire(tenant), self.limits
        except Exception as exc:
            self._warn(self.limits, exc)
            return self.local.take(tenant), self.local

    async def _busy(self, scope: Scope, receive: Receive, send: Send, what: str) -> None:
        await answer(
            scope,
            receive,
            send,
            503,
            f"the server is at its limit of {what}; retry after Retry-After seconds",
            "server_busy",
            retry(2),
        )

    async def _caller(self, scope: Scope, receive: Receive, send: Send) -> Caller | None:
        key = bearer(dict(scope["headers"]))
        if key is None:
            await answer(
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

        from scheduler.api.errors import map_error, unexpected_error_response

        try:
            with anyio.fail_after(self.settings.queue_wait_s):
                caller = await anyio.to_thread.run_sync(resolve, limiter=self.auth_slots)
        except TimeoutError:
            await self._busy(scope, receive, send, f"{AUTH_SLOTS} key lookups at once")
            return None
        except GridshiftError as exc:
            await map_error(exc)(scope, receive, send)
            return None
        except Exception as exc:  # the store is down: the error handlers' 503 rule applies
            await unexpected_error_response(exc)(scope, receive, send)
            return None
        scope.setdefault("state", {})[CALLER_STATE] = caller
        return caller

    async def _no_space(self, scope: Scope, receive: Receive, send: Send) -> None:
        free_mb = free_bytes(self.settings.files_dir) // (1024 * 1024)
        await answer(
            scope,
            receive,
            send,
            507,
            f"the server's storage for uploads is full ({free_mb} MiB free on the data "
            "directory's file system); nothing of this upload was stored: retry after "
            "Retry-After seconds (the operator must free space)",
            "insufficient_storage",
            retry(STORAGE_RETRY_AFTER_S),
        )

    async def _upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = self.settings
        limit = settings.max_file_bytes + MULTIPART_OVERHEAD_BYTES
        too_large = (
            f"the upload exceeds the file limit of {settings.max_file_bytes} bytes "
            "(GRIDSHIFT_MAX_FILE_BYTES); split the requests into several files, or send "
            "a larger file in parts (POST /v1/uploads)"
        )
        length = dict(scope["headers"]).get(b"content-length", b"")
        declared = int(length) if length.isdigit() else 0
        if declared > limit:
            await answer(scope, receive, send, 413, too_large, "file_too_large", param="file")
            return
        settings.files_dir.mkdir(parents=True, exist_ok=True)
        if free_bytes(settings.files_dir) < declared:  # it cannot fit: refuse before reading
            await self._no_space(scope, receive, send)
            return
        try:
            with anyio.fail_after(settings.queue_wait_s):
                await self.upload_slots.acquire()
        except TimeoutError:
            what = f"{settings.max_concurrent_uploads} uploads (GRIDSHIFT_MAX_CONCURRENT_UPLOADS)"
            await self._busy(scope, receive, send, what)
            return
        path = spool_path(settings.files_dir)
        try:
            try:
                with anyio.fail_after(settings.request_timeout_s):
                    spooled = await receive_to_spool(receive, path, limit)
            except TimeoutError:
                await self._timeout(scope, receive, send)
                return
            finally:
                self.upload_slots.release()
            if spooled.outcome is Outcome.TOO_LARGE:
                await answer(scope, receive, send, 413, too_large, "file_too_large", param="file")
            elif spooled.outcome is Outcome.NO_SPACE:
                await self._no_space(scope, receive, send)
            elif spooled.outcome is Outcome.COMPLETE:
                scope.setdefault("state", {})[SPOOL_STATE] = path
                await self._run(scope, consumed(), send, self.slots, spooled=True)
        finally:
            remove_spool(path)

    async def _timeout(self, scope: Scope, receive: Receive, send: Send) -> None:
        await answer(
            scope,
            receive,
            send,
            504,
            f"the request took longer than {self.settings.request_timeout_s:g} s "
            "(GRIDSHIFT_REQUEST_TIMEOUT_S); retry, or send less per request",
            "timeout",
        )

    def _limit(self, scope: Scope) -> tuple[int, str, str, str | None]:
        """The body limit of a request run in a slot, what to say over it, its code and param."""
        path = scope["path"]
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

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        slots: anyio.CapacityLimiter,
        *,
        spooled: bool = False,
    ) -> None:
        """Run the app in one of ``slots`` with the JSON body limit (not for a ``spooled``
        body, already counted) and the request timeout."""
        limit, what, code, param = self._limit(scope)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if not spooled and length.isdigit() and int(length) > limit:
            await answer(scope, receive, send, 413, what, code, param=param)
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
                if received > limit and not spooled:
                    refused = True
                    if not started:
                        await answer(scope, receive, send, 413, what, code, param=param)
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
                await slots.acquire()
        except TimeoutError:
            what_slots = (
                f"{self.settings.max_concurrent_requests} requests in progress "
                "(GRIDSHIFT_MAX_CONCURRENT_REQUESTS)"
                if slots is self.slots
                else f"{PROBE_SLOTS} readiness probes at once"
            )
            await self._busy(scope, receive, send, what_slots)
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
                await self._timeout(scope, receive, send)
        finally:
            slots.release()


def install_guard(app: Any, settings: Settings, authenticate: Authenticate) -> None:
    """Put ``RequestGuard`` outermost in ``app`` (a FastAPI app with ``state.sessions`` and
    ``state.limits``, the shared tenant limits)."""
    app.add_middleware(
        RequestGuard,
        settings=settings,
        sessions=app.state.sessions,
        authenticate=authenticate,
        limits=app.state.limits,
    )
