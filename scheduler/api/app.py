"""The HTTP application factory: OpenAI-compatible files and batches, gridshift's own endpoints."""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from scheduler.api.errors import error_response, install_error_handlers
from scheduler.config import Settings
from scheduler.store.db import engine_from_settings, session_factory
from scheduler.store.files import sweep_files

log = logging.getLogger(__name__)

# Modules exposing ``router`` (an APIRouter), included in this order. Add yours with one line.
ROUTERS = [
    "scheduler.api.routes.health",
    "scheduler.api.routes.files",
    "scheduler.api.routes.batches",
    "scheduler.api.routes.fleet",
    "scheduler.api.routes.review",
    "scheduler.api.routes.metrics",
    "scheduler.api.routes.dashboard",
]

# Room for the multipart envelope around the file (headers, boundaries, the purpose field).
MULTIPART_OVERHEAD_BYTES = 64 * 1024


class UploadLimit:
    """Refuse an upload whose Content-Length already exceeds the file limit, before parsing.

    Starlette spools a multipart upload to disk before the route runs; this stops an oversized
    one at the door. The exact limit is enforced again while the file is copied.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/v1/files":
            length = dict(scope["headers"]).get(b"content-length")
            if (
                length
                and length.isdigit()
                and int(length) > self.max_bytes + MULTIPART_OVERHEAD_BYTES
            ):
                response = error_response(
                    413,
                    f"upload of {int(length)} bytes exceeds the file limit of {self.max_bytes} "
                    "bytes (GRIDSHIFT_MAX_FILE_BYTES); split the requests into several files",
                    "invalid_request_error",
                    "file_too_large",
                    "file",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings) -> FastAPI:
    """Build the API for ``settings``: engine and sessions on ``app.state``, disposed on shutdown.

    The schema must already be migrated (``gridshift db upgrade``; ``gridshift serve`` does it).
    At startup, leftovers of interrupted uploads are swept from ``settings.files_dir``.
    """
    from scheduler.api.deps import load_configured_fleet

    engine = engine_from_settings(settings)
    sessions = session_factory(engine)
    settings.files_dir.mkdir(parents=True, exist_ok=True)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        with sessions() as session:
            report = sweep_files(session, settings.files_dir)
        if report != type(report)():
            log.info("swept files: %s", report)
        try:
            yield
        finally:
            engine.dispose()

    app = FastAPI(
        title="gridshift",
        summary="Carbon-aware batch inference behind the OpenAI Batch API",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = sessions
    app.state.fleet = load_configured_fleet(settings)
    install_error_handlers(app)
    app.add_middleware(UploadLimit, max_bytes=settings.max_file_bytes)
    for name in ROUTERS:
        app.include_router(importlib.import_module(name).router)
    return app
