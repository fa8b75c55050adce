"""Webhook delivery: the outbox (``webhook_deliveries``) sent with Standard Webhooks signatures.

Each due delivery is claimed with a compare-and-set (its ``next_attempt_at`` pushed past the
HTTP timeout, so a second dispatcher does not send it at the same moment), POSTed with::

    webhook-id: <event id>            (the same on every retry: receivers de-duplicate with it)
    webhook-timestamp: <Unix seconds>
    webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">

keyed with the base64-decoded part of the endpoint's ``whsec_`` secret (what the openai client's
``client.webhooks.verify_signature`` checks), and recorded: a 2xx answer is ``delivered``;
anything else (an error status, a refused connection, a timeout) is retried after a delay that
doubles from ``webhook_retry_base_s`` up to ``webhook_retry_max_s``, until
``webhook_retry_window_s`` after the event, when it is marked ``failed``. Time comes from the
caller's ``now`` (the clock seam), so tests step it instead of sleeping.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from scheduler.clock import now_utc
from scheduler.config import Settings
from scheduler.store.webhook_tables import WebhookDelivery, WebhookEndpoint, WebhookEvent
from scheduler.store.webhooks import DELIVERED, FAILED, PENDING, event_body

log = logging.getLogger(__name__)

# POST body to url with headers; returns the HTTP status, raises httpx.HTTPError when no answer.
Post = Callable[[str, dict[str, str], bytes], int]
USER_AGENT = "gridshift-webhooks/1"


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one message (Standard Webhooks, scheme ``v1``)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of one delivery."""
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }


def http_post(timeout_s: float) -> Post:
    """A ``Post`` over httpx (no redirects followed: a receiver must answer itself)."""

    def post(url: str, headers: dict[str, str], body: bytes) -> int:
        with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
            return client.post(url, content=body, headers=headers).status_code

    return post


def retry_delay_s(attempts: int, settings: Settings) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones (exponential, capped)."""
    exponent = min(max(attempts - 1, 0), 30)
    return min(settings.webhook_retry_base_s * 2.0**exponent, settings.webhook_retry_max_s)


@dataclass
class DeliveryReport:
    """What one ``deliver_due`` call did (delivery ids)."""

    delivered: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _claim(
    factory: sessionmaker[Session], delivery_id: str, due: datetime, until: datetime
) -> bool:
    with factory() as s:
        res = s.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == PENDING,
                WebhookDelivery.next_attempt_at == due,
            )
            .values(next_attempt_at=until)
        )
        s.commit()
        return bool(res.rowcount == 1)  # type: ignore[attr-defined]


def _attempt(
    post: Post, endpoint: WebhookEndpoint, event: WebhookEvent, now: datetime
) -> tuple[int | None, str | None]:
    body = event_body(event)
    headers = signed_headers(endpoint.secret, event.id, int(now.timestamp()), body)
    try:
        code = post(endpoint.url, headers, body)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:2000]
    return code, None if 200 <= code < 300 else f"the receiver answered HTTP {code}"


def deliver_due(
    factory: sessionmaker[Session],
    settings: Settings,
    *,
    now: datetime | None = None,
    post: Post | None = None,
    limit: int = 100,
) -> DeliveryReport:
    """Send every pending delivery whose ``next_attempt_at`` has come, oldest first; record each.

    Args:
        now: The time of this round (default the clock seam's now).
        post: How to send (default httpx with ``webhook_timeout_s``).
        limit: At most this many deliveries in this call.
    """
    now = now or now_utc()
    post = post or http_post(settings.webhook_timeout_s)
    report = DeliveryReport()
    with factory() as s:
        due = s.execute(
            select(WebhookDelivery.id, WebhookDelivery.next_attempt_at)
            .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
            .limit(limit)
        ).all()
    claim_until = now + timedelta(seconds=settings.webhook_timeout_s + 60)
    for delivery_id, due_at in due:
        if not _claim(factory, delivery_id, due_at, claim_until):
            continue
        with factory() as s:
            delivery = s.get(WebhookDelivery, delivery_id)
            assert delivery is not None
            endpoint = s.get(WebhookEndpoint, delivery.endpoint_id)
            event = s.get(WebhookEvent, delivery.event_id)
            assert endpoint is not None and event is not None
            code, error = _attempt(post, endpoint, event, now)
            delivery.attempts += 1
            delivery.last_attempt_at, delivery.last_status_code = now, code
            delivery.last_error = error
            if error is None:
                delivery.status, delivery.delivered_at = DELIVERED, now
                report.delivered.append(delivery_id)
            else:
                retry_at = now + timedelta(seconds=retry_delay_s(delivery.attempts, settings))
                window_end = datetime.fromtimestamp(event.created_at, now.tzinfo) + timedelta(
                    seconds=settings.webhook_retry_window_s
                )
                if retry_at > window_end or endpoint.deleted:
                    delivery.status = FAILED
                    report.failed.append(delivery_id)
                else:
                    delivery.next_attempt_at = retry_at
                    report.retrying.append(delivery_id)
                log.warning(
                    "webhook %s of %s to %s: %s (attempt %d)",
                    event.type,
                    event.subject_id,
                    endpoint.url,
                    error,
                    delivery.attempts,
                )
            s.commit()
    return report


def start_webhook_thread(
    factory: sessionmaker[Session], settings: Settings, stop: threading.Event | None = None
) -> threading.Thread:
    """Deliver due webhooks every ``webhook_poll_s`` in a daemon thread (``gridshift dispatch``)."""
    stop = stop or threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                deliver_due(factory, settings)
            except Exception:  # the store may blip: the next round retries
                log.exception("webhook delivery round failed")
            stop.wait(settings.webhook_poll_s)

    thread = threading.Thread(target=run, name="gridshift-webhooks", daemon=True)
    thread.start()
    return thread
