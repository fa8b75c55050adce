"""Tables of webhooks: per-tenant endpoints, the events of batches, and a delivery outbox.

An event row is written in the same transaction as the batch's terminal status (completed,
failed, expired, cancelled), with one ``webhook_deliveries`` row per endpoint of the tenant that
subscribes to its type; the dispatcher delivers the outbox with retries (``scheduler.dispatch.
webhooks``). Event timestamps are Unix seconds as OpenAI shows them; delivery times are UTC
datetimes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from scheduler.store.tables import Base


class WebhookEndpoint(Base):
    """A URL that receives a tenant's events, signed with its ``whsec_`` secret."""

    __tablename__ = "webhook_endpoints"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(String(2000))
    event_types: Mapped[list[Any]]
    # The signing secret must be readable to sign; it is shown to the API only at creation.
    secret: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    deleted: Mapped[bool] = mapped_column(default=False)


class WebhookEvent(Base):
    """One event (OpenAI ``event`` object): ``type`` happened to the object ``subject_id``."""

    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("subject_id", "type"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    type: Mapped[str] = mapped_column(String(64))
    subject_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)


class WebhookDelivery(Base):
    """The outbox: one event for one endpoint, ``pending`` until ``delivered`` or ``failed``."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id"), index=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]
