"""Webhook repository: endpoints of tenants, batch events, and the delivery outbox.

``record_batch_event`` is called INSIDE the transaction that moves a batch to a terminal status,
so an event exists exactly when the status does (a rolled-back move leaves no event, a committed
one always has its event and its pending deliveries). Each (batch, event type) is recorded once.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.clock import now_s, now_utc
from scheduler.errors import InvalidInput, LineError, NotFound
from scheduler.store.paging import new_id, storable
from scheduler.store.tables import Batch
from scheduler.store.webhook_tables import WebhookDelivery, WebhookEndpoint, WebhookEvent

ENDPOINT_PREFIX = "we_"
EVENT_PREFIX = "evt_"
DELIVERY_PREFIX = "whd_"
SECRET_PREFIX = "whsec_"
# The batch statuses that emit an event, and the event's type (OpenAI's names).
EVENT_OF_STATUS = {
    "completed": "batch.completed",
    "failed": "batch.failed",
    "expired": "batch.expired",
    "cancelled": "batch.cancelled",
}
EVENT_TYPES = tuple(EVENT_OF_STATUS.values())
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


def _bad(message: str, param: str) -> InvalidInput:
    return InvalidInput(message, [LineError(None, "invalid_value", message, param)])


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_hint(secret: str) -> str:
    """A masked form of a secret that identifies it without revealing it."""
    return f"{secret[:10]}...{secret[-4:]}"


def check_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL with a host.

    Raises:
        InvalidInput: it is not.
    """
    text = url.strip()
    scheme = host = None
    if text.isascii() and len(text) <= 2000 and not any(c.isspace() or ord(c) < 32 for c in text):
        try:
            parts = urlsplit(text)
            scheme, host = parts.scheme, parts.hostname
        except ValueError:  # e.g. a malformed IPv6 literal
            pass
    if scheme not in ("http", "https") or not host:
        raise _bad(
            "url must be an absolute http(s) URL of at most 2000 ASCII characters without "
            f"spaces, got {url[:80]!r}",
            "url",
        )
    return url.strip()


def check_event_types(event_types: Sequence[str]) -> list[str]:
    """The event types, deduplicated in order, if gridshift emits every one of them.

    Raises:
        InvalidInput: empty, or a type gridshift does not emit.
    """
    if not event_types:
        raise _bad(f"event_types must list at least one of {list(EVENT_TYPES)}", "event_types")
    unknown = [t for t in event_types if t not in EVENT_TYPES]
    if unknown:
        raise _bad(
            f"gridshift emits only {list(EVENT_TYPES)}; {str(unknown[0])[:60]!r} is not one of them",
            "event_types",
        )
    return list(dict.fromkeys(event_types))


def create_endpoint(
    session: Session, *, tenant_id: str, url: str, name: str, event_types: Sequence[str]
) -> WebhookEndpoint:
    """Add an endpoint with a new signing secret (flushed; the caller commits).

    Raises:
        InvalidInput: a bad URL, name or event type.
    """
    name = _check_name(name)
    stamp = now_s()
    row = WebhookEndpoint(
        id=new_id(ENDPOINT_PREFIX),
        tenant_id=tenant_id,
        name=name,
        url=check_url(url),
        event_types=check_event_types(event_types),
        secret=new_secret(),
        created_at=stamp,
        updated_at=stamp,
        deleted=False,
    )
    session.add(row)
    session.flush()
    return row


def update_endpoint(
    session: Session,
    endpoint_id: str,
    *,
    url: str | None = None,
    name: str | None = None,
    event_types: Sequence[str] | None = None,
) -> WebhookEndpoint:
    """Change an endpoint's URL, name or event types (flushed; the caller commits). Deliveries
    already recorded keep going to the endpoint, at its new URL.

    Raises:
        NotFound: no such endpoint.
        InvalidInput: a bad URL, name or event type.
    """
    row = get_endpoint(session, endpoint_id)
    if name is not None:
        row.name = _check_name(name)
    if url is not None:
        row.url = check_url(url)
    if event_types is not None:
        row.event_types = check_event_types(event_types)
    row.updated_at = now_s()
    session.flush()
    return row


def rotate_secret(session: Session, endpoint_id: str) -> WebhookEndpoint:
    """Give an endpoint a new signing secret; the old one stops at once (the caller commits).

    Raises:
        NotFound: no such endpoint.
    """
    row = get_endpoint(session, endpoint_id)
    row.secret = new_secret()
    row.updated_at = now_s()
    session.flush()
    return row


def _check_name(name: str) -> str:
    if not name.strip() or len(name) > 200 or not storable(name):
        raise _bad("name must be 1 to 200 characters (no NUL)", "name")
    return name.strip()


def list_endpoints(session: Session, tenant_id: str | None = None) -> list[WebhookEndpoint]:
    """Endpoints not deleted, newest first; one tenant's, or every tenant's (None)."""
    stmt = select(WebhookEndpoint).where(WebhookEndpoint.deleted.is_(False))
    if tenant_id is not None:
        stmt = stmt.where(WebhookEndpoint.tenant_id == tenant_id)
    return list(session.scalars(stmt.order_by(WebhookEndpoint.id.desc())))


def get_endpoint(session: Session, endpoint_id: str) -> WebhookEndpoint:
    """An endpoint not deleted.

    Raises:
        NotFound: no such endpoint.
    """
    row = session.get(WebhookEndpoint, endpoint_id) if storable(endpoint_id) else None
    if row is None or row.deleted:
        raise NotFound(
            f"no webhook endpoint {endpoint_id[:80]!r}: list them with GET /v1/webhook_endpoints"
        )
    return row


def delete_endpoint(session: Session, endpoint_id: str) -> WebhookEndpoint:
    """Delete an endpoint (the caller commits); its pending deliveries are marked failed.

    Raises:
        NotFound: no such endpoint.
    """
    row = get_endpoint(session, endpoint_id)
    row.deleted = True
    row.updated_at = now_s()
    for d in session.scalars(
        select(WebhookDelivery).where(
            WebhookDelivery.endpoint_id == row.id, WebhookDelivery.status == PENDING
        )
    ):
        d.status, d.last_error = FAILED, "the endpoint was deleted"
    session.flush()
    return row


def record_batch_event(session: Session, batch_id: str, status: str) -> WebhookEvent | None:
    """In the caller's transaction: the event of ``batch_id`` reaching ``status``, with one
    pending delivery per endpoint of its tenant subscribed to the event's type.

    Returns:
        The new event; None when ``status`` emits none or the event was already recorded.
    """
    type_ = EVENT_OF_STATUS.get(str(status))
    if type_ is None:
        return None
    known = select(WebhookEvent.id).where(
        WebhookEvent.subject_id == batch_id, WebhookEvent.type == type_
    )
    tenant_id = session.scalar(select(Batch.tenant_id).where(Batch.id == batch_id))
    if tenant_id is None or session.scalar(known) is not None:
        return None
    event = WebhookEvent(
        id=new_id(EVENT_PREFIX),
        tenant_id=tenant_id,
        type=type_,
        subject_id=batch_id,
        created_at=now_s(),
    )
    session.add(event)
    due = now_utc()
    for endpoint in list_endpoints(session, tenant_id):
        if type_ in endpoint.event_types:
            session.add(
                WebhookDelivery(
                    id=new_id(DELIVERY_PREFIX),
                    event_id=event.id,
                    endpoint_id=endpoint.id,
                    status=PENDING,
                    attempts=0,
                    next_attempt_at=due,
                )
            )
    session.flush()
    return event


def sample_body(event_id: str, type_: str, created_at: int, subject_id: str | None = None) -> bytes:
    """The JSON body of an event, shaped as OpenAI's webhook events (compact, UTF-8)."""
    payload = {
        "id": event_id,
        "object": "event",
        "type": type_,
        "created_at": created_at,
        "data": {"id": subject_id or "batch_test"},
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def event_body(event: WebhookEvent) -> bytes:
    """The JSON body of a recorded event."""
    return sample_body(event.id, event.type, event.created_at, event.subject_id)


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """A delivery as ``gridshift webhooks deliveries`` and the API show it."""

    id: str
    event_id: str
    event_type: str
    subject_id: str
    endpoint_id: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None

    def as_json(self) -> dict[str, object]:
        """JSON form (``object``: ``webhook_delivery``)."""
        return {"object": "webhook_delivery", **{k: getattr(self, k) for k in self.__slots__}}


def list_deliveries(session: Session, endpoint_id: str, limit: int = 100) -> list[DeliveryView]:
    """The newest deliveries of one endpoint, newest first."""
    rows = session.execute(
        select(WebhookDelivery, WebhookEvent)
        .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.endpoint_id == endpoint_id)
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
    ).all()
    return [
        DeliveryView(
            d.id,
            e.id,
            e.type,
            e.subject_id,
            d.endpoint_id,
            d.status,
            d.attempts,
            d.last_status_code,
            d.last_error,
        )
        for d, e in rows
    ]
