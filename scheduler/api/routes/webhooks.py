"""Webhook endpoints with OpenAI's shapes (``client.webhooks.*``), managed with an admin key.

``/v1/webhook_endpoints``: create (the ``whsec_`` secret is in that answer only), list,
retrieve, update, rotate_secret, delete, test. An endpoint belongs to one tenant (``tenant`` in the query or the body;
default the admin's own) and receives that tenant's ``batch.*`` events. Admin-only because a
registered URL makes the dispatcher send requests from inside the deployment.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from scheduler.api.deps import AdminDep, SessionDep, SettingsDep
from scheduler.clock import now_s, now_utc
from scheduler.dispatch.webhooks import http_post, signed_headers
from scheduler.errors import InvalidInput, LineError, NotFound
from scheduler.store import webhooks as repo
from scheduler.store.paging import new_id, storable
from scheduler.store.tenants import get_tenant
from scheduler.store.webhook_tables import WebhookEndpoint

router = APIRouter(prefix="/v1", tags=["webhooks"])


class EndpointCreate(BaseModel):
    """Body of ``POST /v1/webhook_endpoints`` (OpenAI's fields plus ``tenant``)."""

    model_config = ConfigDict(extra="ignore")

    url: str
    name: str = "webhook"
    event_types: list[str] = Field(default_factory=lambda: list(repo.EVENT_TYPES))
    tenant: str | None = None


class EndpointUpdate(BaseModel):
    """Body of ``POST /v1/webhook_endpoints/{id}``: what to change."""

    model_config = ConfigDict(extra="ignore")

    url: str | None = None
    name: str | None = None
    event_types: list[str] | None = None


class SecretRotation(BaseModel):
    """Body of ``POST /v1/webhook_endpoints/{id}/rotate_secret``."""

    model_config = ConfigDict(extra="ignore")

    keep_old_secret_active_for_24_hours: bool = False


class EndpointTest(BaseModel):
    """Body of ``POST /v1/webhook_endpoints/{id}/test``."""

    model_config = ConfigDict(extra="ignore")

    event_type: str = "batch.completed"


def _public(row: WebhookEndpoint, *, secret: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id,
        "object": "webhook_endpoint",
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "event_types": row.event_types,
        "name": row.name,
        "url": row.url,
        "signing_secret_hint": repo.secret_hint(row.secret),
        "tenant_id": row.tenant_id,
    }
    if secret:
        out["signing_secret"] = row.secret
    return out


def _tenant_id(session: SessionDep, name: str | None, default: str) -> str:
    if name is None:
        return default
    tenant = get_tenant(session, name) if storable(name) else None
    if tenant is None:
        raise NotFound(f"no tenant {name[:80]!r}: create it with `gridshift keys create --tenant`")
    return tenant.id


@router.post("/webhook_endpoints")
def create_endpoint(
    body: EndpointCreate, session: SessionDep, admin: AdminDep, tenant: str | None = None
) -> dict[str, Any]:
    """Register a URL for a tenant's batch events; answers the signing secret once."""
    row = repo.create_endpoint(
        session,
        tenant_id=_tenant_id(session, tenant or body.tenant, admin.tenant_id),
        url=body.url,
        name=body.name,
        event_types=body.event_types,
    )
    session.commit()
    return _public(row, secret=True)


@router.get("/webhook_endpoints")
def list_endpoints(
    session: SessionDep, _admin: AdminDep, tenant: str | None = None
) -> dict[str, Any]:
    """Every endpoint (or one tenant's), newest first."""
    tenant_id = _tenant_id(session, tenant, "") if tenant is not None else None
    data = [_public(r) for r in repo.list_endpoints(session, tenant_id)]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": False,
    }


@router.get("/webhook_endpoints/{endpoint_id}")
def retrieve_endpoint(endpoint_id: str, session: SessionDep, _admin: AdminDep) -> dict[str, Any]:
    """One endpoint (never its secret)."""
    return _public(repo.get_endpoint(session, endpoint_id))


@router.post("/webhook_endpoints/{endpoint_id}")
def update_endpoint(
    endpoint_id: str, body: EndpointUpdate, session: SessionDep, _admin: AdminDep
) -> dict[str, Any]:
    """Change the URL, name or event types (``event_types`` is the complete new set)."""
    row = repo.update_endpoint(
        session, endpoint_id, url=body.url, name=body.name, event_types=body.event_types
    )
    session.commit()
    return _public(row)


@router.post("/webhook_endpoints/{endpoint_id}/rotate_secret")
def rotate_secret(
    endpoint_id: str, session: SessionDep, _admin: AdminDep, body: SecretRotation | None = None
) -> dict[str, Any]:
    """A new signing secret, in this answer only; the old one stops signing at once."""
    if body is not None and body.keep_old_secret_active_for_24_hours:
        msg = (
            "keep_old_secret_active_for_24_hours is not supported: the old secret stops at once; "
            "send false (or leave it out) and give the receiver the new secret"
        )
        raise InvalidInput(
            msg, [LineError(None, "invalid_value", msg, "keep_old_secret_active_for_24_hours")]
        )
    row = repo.rotate_secret(session, endpoint_id)
    session.commit()
    return _public(row, secret=True)


@router.get("/webhook_endpoints/{endpoint_id}/deliveries")
def endpoint_deliveries(endpoint_id: str, session: SessionDep, _admin: AdminDep) -> dict[str, Any]:
    """The endpoint's newest 100 deliveries: event, status, attempts, last answer or error."""
    row = repo.get_endpoint(session, endpoint_id)
    return {"object": "list", "data": [d.as_json() for d in repo.list_deliveries(session, row.id)]}


@router.delete("/webhook_endpoints/{endpoint_id}")
def delete_endpoint(endpoint_id: str, session: SessionDep, _admin: AdminDep) -> dict[str, Any]:
    """Delete an endpoint; its pending deliveries are marked failed."""
    row = repo.delete_endpoint(session, endpoint_id)
    session.commit()
    return {"id": row.id, "object": "webhook_endpoint.deleted", "deleted": True}


@router.post("/webhook_endpoints/{endpoint_id}/test")
def test_endpoint(
    endpoint_id: str,
    body: EndpointTest,
    session: SessionDep,
    settings: SettingsDep,
    _admin: AdminDep,
) -> dict[str, Any]:
    """Send one signed sample event now (not recorded) and answer the receiver's HTTP status."""
    row = repo.get_endpoint(session, endpoint_id)
    repo.check_event_types([body.event_type])
    event_id = new_id(repo.EVENT_PREFIX)
    payload = repo.sample_body(event_id, body.event_type, now_s())
    headers = signed_headers(row.secret, event_id, int(now_utc().timestamp()), payload)
    try:
        code = http_post(settings.webhook_timeout_s)(row.url, headers, payload)
    except httpx.HTTPError as exc:
        msg = f"could not deliver to {row.url[:200]}: {type(exc).__name__}: {exc}"[:1000]
        raise InvalidInput(msg, [LineError(None, "webhook_unreachable", msg, "url")]) from None
    return {
        "object": "webhook_endpoint.test",
        "event_type": body.event_type,
        "status_code": code,
        "success": True,
        "webhook_endpoint_id": row.id,
    }
