"""``GET /healthz``: the process answers and the database is reachable."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text

from scheduler.api.deps import SessionDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(session: SessionDep) -> dict[str, Any]:
    """Return ``{"status": "ok"}`` once the database answers a trivial query."""
    session.execute(text("SELECT 1"))
    return {"status": "ok", "database": "ok"}
