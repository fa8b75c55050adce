"""Admin API for keys: ``GET/POST /v1/admin/keys``, ``DELETE /v1/admin/keys/{key_id}``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from scheduler.api.deps import AdminDep, SessionDep
from scheduler.store.tables import now_utc
from scheduler.store.tenants import create_api_key, key_info, list_keys, revoke_key_by_id

router = APIRouter(prefix="/v1/admin", tags=["keys"])


class KeyCreate(BaseModel):
    """Body of ``POST /v1/admin/keys``."""

    tenant: str = Field(min_length=1, max_length=200)
    admin: bool = False
    expires_in_days: int | None = Field(None, ge=1, le=3650)


@router.get("/keys")
def get_keys(session: SessionDep, _admin: AdminDep, tenant: str | None = None) -> dict[str, Any]:
    """Every key (or one tenant's): id, prefix, tenant, admin, state, times; never the key."""
    data = [k.as_json() for k in list_keys(session, tenant_name=tenant)]
    return {"object": "list", "data": data}


@router.post("/keys")
def post_key(body: KeyCreate, session: SessionDep, _admin: AdminDep) -> dict[str, Any]:
    """Create a key; the plaintext ``key`` is in this answer only (only its hash is kept)."""
    expires = now_utc() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    key = create_api_key(session, body.tenant, admin=body.admin, expires_at=expires)
    session.commit()
    return {**key_info(session, key).as_json(), "key": key}


@router.delete("/keys/{key_id}")
def delete_key(key_id: str, session: SessionDep, _admin: AdminDep) -> dict[str, Any]:
    """Revoke a key at once (idempotent); answers the key's record with ``state: revoked``."""
    info = revoke_key_by_id(session, key_id)
    session.commit()
    return info.as_json()
