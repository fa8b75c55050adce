"""Webhooks end to end: endpoints managed with the official client's ``webhooks`` resource, batch
events written with the batch's terminal status, delivered over real HTTP to a local receiver
that checks the signature with the openai client's own verifier, and retried (driven by the
clock, not sleeps) until a receiver that was down comes back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from openai import OpenAI
from openai.types.webhooks import BatchCompletedWebhookEvent
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from scheduler.cli import build_app
from scheduler.clock import SETTING as CLOCK_SETTING
from scheduler.clock import clock_setting, frozen, pinned, use_clock
from scheduler.config import Settings
from scheduler.dispatch.finalize import finalize_batch
from scheduler.dispatch.webhooks import deliver_due
from scheduler.domain import BatchStatus
from scheduler.store.db import make_engine, session_factory
from scheduler.store.migrate import upgrade
from scheduler.store.tables import Batch
from scheduler.store.tenants import create_api_key
from scheduler.store.webhook_tables import WebhookDelivery, WebhookEvent
from tests.integration.api_harness import CHAT, chat_line, free_port, running_server, write_fleet

pytestmark = pytest.mark.integration

ADMIN_KEY = "gs-webhooks-admin-for-tests"
T0 = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)
TOLERANCE_S = 10**10  # the signature's timestamp is the pinned clock's, not the wall clock's


@dataclass
class Receiver:
    """A real HTTP receiver on 127.0.0.1 recording every POST (headers, body)."""

    port: int
    status: int = 200
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@dataclass
class Api:
    base_url: str
    key: str
    tenant: str
    settings: Settings
    sessions: sessionmaker[Session]
    tmp: Path

    def client(self, key: str | None = None) -> OpenAI:
        return OpenAI(base_url=f"{self.base_url}/v1", api_key=key or self.key, max_retries=0)

    def batch(self, lines: list[str]) -> str:
        client = self.client()
        file = client.files.create(
            file=("in.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch"
        )
        return client.batches.create(
            input_file_id=file.id, endpoint=CHAT, completion_window="24h"
        ).id


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    url = (
        f"sqlite:///{tmp_path / 'api.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        fleet=write_fleet(tmp_path),
        admin_key=ADMIN_KEY,
        webhook_timeout_s=5.0,
    )
    engine = make_engine(url)
    upgrade(engine)
    tenant = f"acme-{uuid.uuid4().hex[:8]}"
    sessions = session_factory(engine)
    with sessions() as s:
        key = create_api_key(s, tenant)
        s.commit()
    with running_server(settings) as base_url:
        yield Api(base_url, key, tenant, settings, sessions, tmp_path)
    engine.dispose()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(port=free_port())
    yield r
    r.stop()


def _complete(api: Api, batch_id: str) -> None:
    """Drive a batch through the real finalizer as the dispatcher does once all has settled."""
    with api.sessions() as s:
        s.execute(
            update(Batch).where(Batch.id == batch_id).values(status=BatchStatus.FINALIZING.value)
        )
        s.commit()
    with use_clock(frozen(T0)):
        assert finalize_batch(api.sessions, api.settings, batch_id, BatchStatus.COMPLETED, now=T0)


def _deliveries(api: Api, batch_id: str) -> list[WebhookDelivery]:
    """The outbox rows of one batch's events (the PostgreSQL database is shared by tests)."""
    with api.sessions() as s:
        return list(
            s.scalars(
                select(WebhookDelivery)
                .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
                .where(WebhookEvent.subject_id == batch_id)
                .order_by(WebhookDelivery.id)
            )
        )


def test_a_receiver_gets_a_signed_batch_completed_it_verifies_with_the_openai_client(
    api: Api, receiver: Receiver
) -> None:
    receiver.start()
    admin = api.client(ADMIN_KEY)
    # Given an endpoint registered for the tenant with the official client (admin key)
    created = admin.webhooks.create(
        url=receiver.url,
        name="nightly",
        event_types=["batch.completed", "batch.cancelled"],
        extra_query={"tenant": api.tenant},
    )
    secret = created.signing_secret
    assert secret.startswith("whsec_") and created.object == "webhook_endpoint"
    assert [e.id for e in admin.webhooks.list()] == [created.id]
    assert admin.webhooks.retrieve(created.id).signing_secret_hint == created.signing_secret_hint
    with pytest.raises(openai.PermissionDeniedError):  # a tenant key may not register URLs
        api.client().webhooks.create(url=receiver.url, name="x", event_types=["batch.completed"])

    # When a batch of the tenant completes through the finalizer
    batch_id = api.batch([chat_line("r1"), chat_line("r2")])
    _complete(api, batch_id)

    # Then the event and its delivery were written with the status, and nothing is sent yet
    (pending,) = _deliveries(api, batch_id)
    assert (pending.status, pending.attempts) == ("pending", 0) and receiver.got == []

    # When the dispatcher's delivery round runs
    report = deliver_due(api.sessions, api.settings, now=T0)

    # Then the receiver got one OpenAI-shaped event, signed as the openai client verifies
    assert report.delivered == [pending.id]
    ((headers, body),) = receiver.got
    admin.webhooks.verify_signature(body, headers, secret=secret, tolerance=TOLERANCE_S)
    event = BatchCompletedWebhookEvent.model_validate_json(body)
    assert (event.type, event.object, event.data.id) == ("batch.completed", "event", batch_id)
    assert headers["webhook-id"] == event.id and event.id.startswith("evt_")
    assert headers["webhook-timestamp"] == str(int(T0.timestamp()))
    with pytest.raises(openai.InvalidWebhookSignatureError):  # a tampered body is refused
        admin.webhooks.verify_signature(
            body.replace(b"completed", b"cancelled"),
            headers,
            secret=secret,
            tolerance=TOLERANCE_S,
        )
    (done,) = _deliveries(api, batch_id)
    assert (done.status, done.attempts, done.last_status_code) == ("delivered", 1, 200)

    # And a second round sends nothing again
    assert deliver_due(api.sessions, api.settings, now=T0 + timedelta(hours=1)).delivered == []

    # And the test call sends a signed sample at once
    result = admin.webhooks.test(created.id, event_type="batch.completed")
    assert (result.status_code, result.webhook_endpoint_id) == (200, created.id)
    admin.webhooks.verify_signature(*reversed(receiver.got[-1]), secret=secret, tolerance=300)

    # And update and rotate_secret work as on OpenAI: the next delivery is signed with the new
    # secret only
    updated = admin.webhooks.update(created.id, name="renamed", event_types=["batch.completed"])
    assert (updated.name, updated.event_types, updated.url) == (
        "renamed",
        ["batch.completed"],
        receiver.url,
    )
    rotated = admin.webhooks.rotate_secret(created.id)
    assert rotated.signing_secret.startswith("whsec_") and rotated.signing_secret != secret
    with pytest.raises(openai.BadRequestError):
        admin.webhooks.rotate_secret(created.id, keep_old_secret_active_for_24_hours=True)
    admin.webhooks.test(created.id, event_type="batch.completed")
    headers, body = receiver.got[-1]
    admin.webhooks.verify_signature(body, headers, secret=rotated.signing_secret, tolerance=300)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        admin.webhooks.verify_signature(body, headers, secret=secret, tolerance=300)

    # And deleting the endpoint removes it from the list
    assert admin.webhooks.delete(created.id).deleted is True
    assert list(admin.webhooks.list()) == []


def test_a_receiver_that_is_down_gets_the_event_when_it_comes_back(
    api: Api, receiver: Receiver
) -> None:
    # Given an endpoint whose receiver is not running, and a batch cancelled through the API
    admin = api.client(ADMIN_KEY)
    endpoint = admin.webhooks.create(
        url=receiver.url,
        name="down",
        event_types=["batch.cancelled"],
        extra_query={"tenant": api.tenant},
    )
    with use_clock(frozen(T0)):  # the server runs in this process: it reads T0 too
        batch_id = api.batch([chat_line("r1")])
        assert api.client().batches.cancel(batch_id).status == "cancelled"
    with api.sessions() as s:  # the event committed with the status
        events = select(WebhookEvent.type).where(WebhookEvent.subject_id == batch_id)
        assert s.scalars(events).all() == ["batch.cancelled"]

    # When the first round finds the receiver down
    first = deliver_due(api.sessions, api.settings, now=T0)
    (row,) = _deliveries(api, batch_id)
    assert first.retrying == [row.id] and row.status == "pending" and row.attempts == 1
    assert row.last_error is not None and "Connect" in row.last_error

    # Then it is not retried before its backoff (5 s), and a second failure doubles it (10 s)
    assert deliver_due(api.sessions, api.settings, now=T0 + timedelta(seconds=4)).retrying == []
    assert deliver_due(api.sessions, api.settings, now=T0 + timedelta(seconds=5)).retrying == [
        row.id
    ]
    assert deliver_due(api.sessions, api.settings, now=T0 + timedelta(seconds=14)).retrying == []

    # When the receiver comes back (answering 503 first, then 200)
    receiver.status = 503
    receiver.start()
    assert deliver_due(api.sessions, api.settings, now=T0 + timedelta(seconds=15)).retrying == [
        row.id
    ]
    receiver.status = 200
    later = T0 + timedelta(seconds=15 + 20)
    assert deliver_due(api.sessions, api.settings, now=later).delivered == [row.id]

    # Then it got the event, the same message id each time, and the outbox says so
    ids = {h["webhook-id"] for h, _ in receiver.got}
    assert len(receiver.got) == 2 and len(ids) == 1
    (done,) = _deliveries(api, batch_id)
    assert (done.status, done.attempts, done.last_status_code, done.last_error) == (
        "delivered",
        4,
        200,
        None,
    )
    shown = httpx.get(
        f"{api.base_url}/v1/webhook_endpoints/{endpoint.id}/deliveries",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ).json()["data"]
    assert [(d["subject_id"], d["status"], d["attempts"]) for d in shown] == [
        (batch_id, "delivered", 4)
    ]


def test_a_failed_validation_records_batch_failed_and_a_dead_receiver_is_given_up(
    api: Api, receiver: Receiver
) -> None:
    admin = api.client(ADMIN_KEY)
    admin.webhooks.create(
        url=receiver.url,
        name="dead",
        event_types=["batch.failed"],
        extra_query={"tenant": api.tenant},
    )
    # Given a batch whose file fails validation at once
    with use_clock(frozen(T0)):
        batch_id = api.batch([chat_line("r1", model="no-such-model")])
    assert api.client().batches.retrieve(batch_id).status == "failed"
    with api.sessions() as s:
        (event,) = s.scalars(select(WebhookEvent).where(WebhookEvent.subject_id == batch_id))
    assert (event.type, event.subject_id) == ("batch.failed", batch_id)

    # When the receiver never answers, Then after the retry window (600 s here) it is failed
    settings = api.settings.model_copy(update={"webhook_retry_window_s": 600.0})
    created = datetime.fromtimestamp(event.created_at, UTC)
    assert created == T0
    at = created
    for _ in range(20):
        deliver_due(api.sessions, settings, now=at)
        (row,) = _deliveries(api, batch_id)
        if row.status != "pending":
            break
        at = row.next_attempt_at
    # attempts at +0, 5, 15, 35, 75, 155, 315 s; the next (635 s) would be past the window
    assert (row.status, row.attempts, receiver.got) == ("failed", 7, [])
    assert row.last_attempt_at == created + timedelta(seconds=315)


def test_the_webhooks_cli_adds_lists_tests_and_removes_an_endpoint(
    api: Api, receiver: Receiver
) -> None:
    receiver.start()
    opts = ["--api-url", api.base_url, "--api-key", ADMIN_KEY]

    def cli(*args: str) -> Result:
        return CliRunner().invoke(build_app(), [*args, *opts], catch_exceptions=False)

    # When an endpoint is added for the tenant
    added = cli("webhooks", "add", receiver.url, "--tenant", api.tenant, "--event", "batch.failed")
    assert added.exit_code == 0, added.output
    endpoint_id, secret = added.stdout.split()[0], added.stdout.splitlines()[1]
    assert endpoint_id.startswith("we_") and secret.startswith("whsec_")

    # Then it is listed, its test delivery verifies with that secret, and it can be removed
    listed = cli("webhooks", "list", "--tenant", api.tenant)
    assert endpoint_id in listed.stdout and "batch.failed" in listed.stdout
    tested = cli("webhooks", "test", endpoint_id, "--event", "batch.failed")
    assert tested.exit_code == 0 and "HTTP 200" in tested.stdout
    headers, body = receiver.got[-1]
    api.client().webhooks.verify_signature(body, headers, secret=secret, tolerance=300)
    assert b'"type":"batch.failed"' in body
    assert cli("webhooks", "remove", endpoint_id).exit_code == 0
    assert endpoint_id not in cli("webhooks", "list", "--tenant", api.tenant).stdout
    assert cli("webhooks", "remove", endpoint_id).exit_code == 4  # not found
    bad = cli("webhooks", "add", "ftp://x", "--tenant", api.tenant)
    assert bad.exit_code == 2 and "http(s) URL" in bad.output


def test_gridshift_dispatch_delivers_the_outbox(api: Api, receiver: Receiver) -> None:
    # Given a cancelled batch whose event waits in the outbox for a running receiver
    receiver.start()
    admin = api.client(ADMIN_KEY)
    secret = admin.webhooks.create(
        url=receiver.url,
        name="d",
        event_types=["batch.cancelled"],
        extra_query={"tenant": api.tenant},
    ).signing_secret
    setting = clock_setting(T0)  # the spawned dispatcher's clock agrees with this process's
    with use_clock(pinned(T0)):
        batch_id = api.batch([chat_line("r1")])
        assert api.client().batches.cancel(batch_id).status == "cancelled"

    # When the dispatcher runs one tick as its own process (its --once tick re-plans inline, so
    # its fleet needs signals: the session's PostgreSQL database may hold other tests' open
    # batches to plan)
    fleet = yaml.safe_load(Path(str(api.settings.fleet)).read_text(encoding="utf-8"))
    for site in fleet["sites"]:
        site["signals"] = {"carbon": {"provider": "synthetic"}, "price": {"provider": "synthetic"}}
    fleet_path = Path(str(api.settings.data_dir)).parent / "dispatch-fleet.yaml"
    fleet_path.write_text(yaml.safe_dump(fleet), encoding="utf-8")
    env = {
        **os.environ,
        CLOCK_SETTING: setting,
        "GRIDSHIFT_DATABASE_URL": api.settings.resolved_database_url,
        "GRIDSHIFT_DATA_DIR": str(api.settings.data_dir),
        "GRIDSHIFT_FLEET": str(fleet_path),
    }
    done = subprocess.run(
        [sys.executable, "-c", "from scheduler.cli import main; main()", "dispatch", "--once"],
        env=env,
        capture_output=True,
        timeout=300,
    )

    # Then the receiver got the signed batch.cancelled
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    ((headers, body),) = receiver.got
    admin.webhooks.verify_signature(body, headers, secret=secret, tolerance=TOLERANCE_S)
    assert json.loads(body)["data"] == {"id": batch_id}
    assert 0 <= int(headers["webhook-timestamp"]) - int(T0.timestamp()) < 300
    assert [d.status for d in _deliveries(api, batch_id)] == ["delivered"]
