"""The HTTP application factory: OpenAI-compatible files and batches, gridshift's own endpoints."""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from scheduler.api.errors import install_error_handlers
from scheduler.api.guard import install_guard
from scheduler.api.http_metrics import install_http_metrics
from scheduler.api.limits import limits_from_settings
from scheduler.config import Settings
from scheduler.review.metrics import make_registry
from scheduler.store.db import engine_from_settings, session_factory
from scheduler.store.files import sweep_files
from scheduler.store.uploads import sweep_uploads

log = logging.getLogger(__name__)

# Modules exposing ``router`` (an APIRouter), included in this order. Add yours with one line.
ROUTERS = [
    "scheduler.api.routes.health",
    "scheduler.api.routes.files",
    "scheduler.api.routes.uploads",
    "scheduler.api.routes.batches",
    "scheduler.api.routes.fleet",
    "scheduler.api.routes.models",
    "scheduler.api.routes.review",
    "scheduler.api.routes.operations",
    "scheduler.api.routes.metrics",
    "scheduler.api.routes.dashboard",
    "scheduler.api.routes.keys",
    "scheduler.api.routes.webhooks",
]


def create_app(settings: Settings) -> FastAPI:
    """Build the API for ``settings``: engine and sessions on ``app.state``, disposed on shutdown.

    The schema must already be migrated (``gridshift db upgrade``; ``gridshift serve`` does it).
    At startup, leftovers of interrupted uploads (and parts of finished or expired
    multipart uploads) are swept from ``settings.files_dir``.
    """
    from scheduler.api.deps import authenticate, load_configured_fleet

    engine = engine_from_settings(settings)
    sessions = session_factory(engine)
    settings.files_dir.mkdir(parents=True, exist_ok=True)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        with sessions() as session:
            report = sweep_files(session, settings.files_dir)
            sweep_uploads(session, settings.files_dir)
        if report != type(report)():
            log.info("swept files: %s", report)
        try:
            yield
        finally:
            await app.state.limits.aclose()
            engine.dispose()

    app = FastAPI(
        title="gridshift",
        summary="Carbon-aware batch inference behind the OpenAI Batch API",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if settings.api_docs else None,
        redoc_url="/redoc" if settings.api_docs else None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = sessions
    app.state.fleet = load_configured_fleet(settings)
    app.state.limits = limits_from_settings(settings, engine)
    install_error_handlers(app)
    install_guard(app, settings, lambda session, key: authenticate(session, settings, key))
    # /metrics: process and HTTP families always; the store's only where this API exports them.
    app.state.metrics_registry = make_registry(
        sessions if settings.metrics_store else None, process=True
    )
    install_http_metrics(app, app.state.metrics_registry)
    for name in ROUTERS:
        app.include_router(importlib.import_module(name).router)
    return app
