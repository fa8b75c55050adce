"""How ``gridshift serve`` runs uvicorn: connection limits, keep-alive and header timeouts, and
accept errors logged once per interval.

- ``limit_concurrency`` = ``GRIDSHIFT_MAX_CONNECTIONS``: beyond, uvicorn answers 503 at once.
- ``timeout_keep_alive`` = ``GRIDSHIFT_KEEP_ALIVE_S``: idle keep-alive connections are closed.
- Header timeout (uvicorn has none): ``HeaderTimeoutProtocol`` closes a connection that has not
  completed its first request head within ``GRIDSHIFT_HEADER_TIMEOUT_S`` (half-open clients).
- The soft open-file limit is raised to the hard one, and ``accept()`` errors (``EMFILE`` when
  file descriptors run out) are logged once per ``ACCEPT_LOG_EVERY_S`` with a count, not as one
  traceback per connection.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from scheduler.config import Settings

log = logging.getLogger(__name__)
ACCEPT_LOG_EVERY_S = 10.0


def header_timeout_protocol(timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol, closing connections whose first request head is late."""
    base: Any = AutoHTTPProtocol

    class HeaderTimeoutProtocol(base):  # type: ignore[misc]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._header_timer = self.loop.call_later(timeout_s, self._header_timeout)

        def _header_timeout(self) -> None:
            if self.cycle is None and not self.transport.is_closing():
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self._header_timer.cancel()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


class AcceptErrorLog:
    """An event loop exception handler: ``OSError`` contexts (failed accepts) are counted and
    logged at most once per interval; everything else goes to the default handler."""

    def __init__(self, every_s: float = ACCEPT_LOG_EVERY_S) -> None:
        self.every_s = every_s
        self.suppressed = 0
        self.logged_at = -float("inf")

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if not isinstance(exc, OSError):
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self.logged_at < self.every_s:
            self.suppressed += 1
            return
        log.error(
            "%s: %r (%d more like it in the last %g s; raise the open-file limit or lower "
            "GRIDSHIFT_MAX_CONNECTIONS)",
            context.get("message", "socket error"),
            exc,
            self.suppressed,
            self.every_s,
        )
        self.logged_at, self.suppressed = now, 0


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments ``gridshift serve`` gives ``uvicorn.Config``."""
    return {
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": settings.keep_alive_s,
        "http": header_timeout_protocol(settings.header_timeout_s),
    }
