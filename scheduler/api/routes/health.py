"""``GET /healthz`` (liveness) and ``GET /readyz`` (readiness, with a detail per check).

``/healthz`` only says that the process answers: the request guard serves it without a request
slot and it touches no database, so a busy server is never restarted by its liveness probe and a
database outage does not restart every API replica. ``/readyz`` runs ``READINESS_CHECKS`` (two
probe slots of its own) and answers 503 while any of them fails; add a check with one entry.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from scheduler.api.deps import SessionDep, SettingsDep
from scheduler.api.errors import STORE_RETRY_AFTER_S
from scheduler.config import Settings
from scheduler.store.tables import PlanRecord, now_utc

router = APIRouter(tags=["health"])

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Check:
    """One readiness check's answer: ``ok`` and what it saw (shown under ``checks.<name>``)."""

    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


def database_check(session: Session, _settings: Settings) -> Check:
    """The database answers a trivial query."""
    session.execute(text("SELECT 1"))
    return Check(True, {"status": "ok"})


def disk_check(_session: Session, settings: Settings) -> Check:
    """The data directory's file system has at least ``GRIDSHIFT_MIN_FREE_DISK_MB`` free."""
    settings.files_dir.mkdir(parents=True, exist_ok=True)
    free_mb = shutil.disk_usage(settings.files_dir).free // MiB
    ok = free_mb >= settings.min_free_disk_mb
    return Check(ok, {"free_mb": free_mb, "min_free_mb": settings.min_free_disk_mb})


def planner_check(session: Session, _settings: Settings) -> Check:
    """What the store knows of the planner: the newest plan and its age (informational: the API
    accepts work while no planner runs)."""
    created = session.scalar(select(PlanRecord.created_at).order_by(PlanRecord.id.desc()).limit(1))
    if created is None:
        return Check(True, {"latest_plan_at": None, "note": "no plan yet"})
    age_s = (now_utc() - created).total_seconds()
    return Check(True, {"latest_plan_at": created.isoformat(), "age_s": round(age_s, 1)})


ReadinessCheck = Callable[[Session, Settings], Check]
# name -> check, run in this order by /readyz. An exception is a failed check (its class and
# message are the detail); other modules may add entries at import time.
READINESS_CHECKS: dict[str, ReadinessCheck] = {
    "database": database_check,
    "disk": disk_check,
    "planner": planner_check,
}


@router.get("/healthz")
async def healthz() -> dict[str, Any]:
    """Liveness: ``{"status": "ok"}`` whenever the process answers (no database, no queue)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
def readyz(session: SessionDep, settings: SettingsDep) -> dict[str, Any] | JSONResponse:
    """Readiness: every check of ``READINESS_CHECKS`` with its detail; 503 while one fails."""
    checks: dict[str, dict[str, Any]] = {}
    for name, check in READINESS_CHECKS.items():
        try:
            result = check(session, settings)
        except Exception as exc:
            session.rollback()
            result = Check(False, {"error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        checks[name] = {"ok": result.ok, **result.detail}
    failed = [name for name, c in checks.items() if not c["ok"]]
    if not failed:
        return {"status": "ready", "checks": checks}
    message = f"not ready: {', '.join(failed)} failed (see checks)"
    body = {
        "error": {"message": message, "type": "server_error", "param": None, "code": "not_ready"},
        "status": "not_ready",
        "checks": checks,
    }
    return JSONResponse(body, 503, headers={"Retry-After": str(STORE_RETRY_AFTER_S)})
