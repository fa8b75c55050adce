"""The official openai client against a real gridshift server (uvicorn, real HTTP), SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI
from sqlalchemy import select

from scheduler.clock import now_s
from scheduler.config import Settings
from scheduler.store.db import make_engine, session_factory
from scheduler.store.tables import BatchRequest
from tests.factories import tenant_keys
from tests.integration.api_harness import CHAT, chat_line, running_server, write_fleet

pytestmark = pytest.mark.integration

ADMIN_KEY = "gs-bootstrap-admin-for-tests"
MAX_FILE_BYTES = 50_000


@dataclass
class Api:
    base_url: str
    key_a: str
    key_b: str
    tmp: Path
    database_url: str

    def client(self, key: str | None = None) -> OpenAI:
        return OpenAI(
            base_url=f"{self.base_url}/v1", api_key=key or self.key_a, max_retries=0, timeout=30
        )

    def upload(self, client: OpenAI, name: str, lines: list[str]) -> str:
        path = self.tmp / name
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        with path.open("rb") as f:
            return client.files.create(file=f, purpose="batch").id


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    """A running server on SQLite or PostgreSQL, with keys of two fresh tenants."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'api.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        fleet=write_fleet(tmp_path),
        admin_key=ADMIN_KEY,
        max_file_bytes=MAX_FILE_BYTES,
    )
    key_a, key_b = tenant_keys(url, "acme", "globex")
    with running_server(settings) as base_url:
        yield Api(base_url=base_url, key_a=key_a, key_b=key_b, tmp=tmp_path, database_url=url)


def test_official_client_uploads_creates_retrieves_cancels_and_deletes(api: Api) -> None:
    # Given a good three-request file uploaded with the official client
    client = api.client()
    lines = [
        chat_line("r1", max_tokens=20),
        chat_line("r2", text="x" * 400),
        chat_line("r3", model="auto"),
    ]
    before = now_s()
    file = client.files.create(
        file=("requests.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch"
    )
    assert (file.object, file.purpose, file.filename, file.status) == (
        "file",
        "batch",
        "requests.jsonl",
        "processed",
    )
    assert file.bytes == len(("\n".join(lines) + "\n").encode()) and file.created_at >= before
    assert client.files.retrieve(file.id).id == file.id

    # When a batch is created with gridshift's extra fields
    deadline = before + 5 * 3600
    batch = client.batches.create(
        input_file_id=file.id,
        endpoint=CHAT,
        completion_window="24h",
        metadata={"team": "search"},
        extra_body={"deadline": deadline, "min_quality": 0.5, "sites": ["site-b"], "priority": 2},
    )

    # Then it is an OpenAI batch object, in progress, with the requested options echoed
    assert (batch.object, batch.endpoint, batch.status, batch.input_file_id) == (
        "batch",
        CHAT,
        "in_progress",
        file.id,
    )
    assert batch.completion_window == "24h" and batch.metadata == {"team": "search"}
    assert batch.request_counts is not None
    assert (
        batch.request_counts.total,
        batch.request_counts.completed,
        batch.request_counts.failed,
    ) == (3, 0, 0)
    assert before <= batch.created_at <= now_s() and batch.in_progress_at == batch.created_at
    assert batch.expires_at == deadline and batch.errors is None
    assert batch.output_file_id is None and batch.cancelled_at is None and batch.failed_at is None
    extra = (batch.model_extra or {})["gridshift"]
    assert extra["deadline"] == deadline and extra["sites"] == ["site-b"] and extra["priority"] == 2
    parts = {p["model"]: p for p in extra["parts"]}
    assert set(parts) == {"tiny-chat", None}  # None: the "auto" part, planned by min_quality
    assert parts[None]["min_quality"] == 0.5 and parts["tiny-chat"]["requests"] == 2
    assert parts["tiny-chat"]["tokens_estimated"] is True
    assert extra["planned"]["slots"] == [] and extra["actual"]["energy_kwh"] == 0.0
    assert extra["energy_method"] is None

    # And retrieve returns the same object
    again = client.batches.retrieve(batch.id)
    assert again.to_dict() == batch.to_dict()

    # When it is cancelled before anything ran, Then it is cancelled at once
    cancelled = client.batches.cancel(batch.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at and cancelled.cancelling_at
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)

    # And the file content comes back byte for byte; delete hides it
    assert client.files.content(file.id).read() == file_bytes(lines)
    assert [f.id for f in client.files.list(purpose="batch")] == [file.id]
    deleted = client.files.delete(file.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (file.id, "file", True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file.id)
    assert list(client.files.list()) == []


def file_bytes(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def test_batches_list_newest_first_with_cursor_pagination(api: Api) -> None:
    # Given four batches created one after the other
    client = api.client()
    fid = api.upload(client, "in.jsonl", [chat_line("a"), chat_line("b")])
    ids = [
        client.batches.create(input_file_id=fid, endpoint=CHAT, completion_window="6h").id  # type: ignore[arg-type]
        for _ in range(4)
    ]
    # When listed two at a time
    page1 = client.batches.list(limit=2)
    page2 = client.batches.list(limit=2, after=page1.data[-1].id)
    page3 = client.batches.list(limit=2, after=page2.data[-1].id)
    # Then pages run newest first, has_more flips on the last full page, auto-paging sees all
    assert [b.id for b in page1.data] == ids[::-1][:2] and page1.has_more is True
    assert [b.id for b in page2.data] == ids[::-1][2:] and page2.has_more is False
    assert page3.data == []
    assert [b.id for b in client.batches.list(limit=1)] == ids[::-1]
    raw = httpx.get(
        f"{api.base_url}/v1/batches",
        params={"limit": 3},
        headers={"Authorization": f"Bearer {api.key_a}"},
    ).json()
    assert (raw["object"], raw["first_id"], raw["last_id"], raw["has_more"]) == (
        "list",
        ids[3],
        ids[1],
        True,
    )
    # And limits outside 1..100 are refused in OpenAI's error shape
    with pytest.raises(openai.BadRequestError):
        client.batches.list(limit=101)


def test_malformed_file_fails_listing_every_bad_line_while_a_good_file_succeeds(api: Api) -> None:
    # Given a good file and a file with bad lines 2, 4 and 5
    client = api.client()
    good = api.upload(
        client, "good.jsonl", [chat_line("g1"), chat_line("g2", model="llama-3.1-8b-instruct")]
    )
    bad = api.upload(
        client,
        "bad.jsonl",
        [
            chat_line("b1"),
            "{not json",
            chat_line("b3"),
            chat_line("b3"),
            chat_line("b5", model="gpt-99", temperature=3),
        ],
    )
    # When both are submitted in the same run
    bad_batch = client.batches.create(input_file_id=bad, endpoint=CHAT, completion_window="24h")
    good_batch = client.batches.create(input_file_id=good, endpoint=CHAT, completion_window="24h")
    # Then the bad one failed, naming each bad line with a code; the good one is unaffected
    assert bad_batch.status == "failed" and bad_batch.failed_at and bad_batch.in_progress_at is None
    assert bad_batch.errors is not None and bad_batch.errors.object == "list"
    found = [(e.line, e.code) for e in bad_batch.errors.data or []]
    assert found == [(2, "invalid_json_line"), (4, "duplicate_custom_id"), (5, "model_not_found")]
    assert all(e.message for e in bad_batch.errors.data or [])
    assert good_batch.status == "in_progress" and good_batch.request_counts is not None
    assert good_batch.request_counts.total == 2
    assert client.batches.retrieve(bad_batch.id).status == "failed"
    # And the good file's requests are indexed (line, custom_id, part), the bad file's are not
    engine = make_engine(api.database_url)
    with session_factory(engine)() as s:
        rows = s.execute(
            select(
                BatchRequest.batch_id,
                BatchRequest.line_no,
                BatchRequest.custom_id,
                BatchRequest.part_id,
            )
            .where(BatchRequest.batch_id.in_([good_batch.id, bad_batch.id]))
            .order_by(BatchRequest.line_no)
        ).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        (good_batch.id, 1, "g1", f"{good_batch.id}~tiny-chat"),
        (good_batch.id, 2, "g2", f"{good_batch.id}~llama-3.1-8b-instruct"),
    ]


def test_bad_create_options_and_oversized_uploads_get_openai_errors(api: Api) -> None:
    client = api.client()
    fid = api.upload(client, "in.jsonl", [chat_line("a")])
    with pytest.raises(openai.BadRequestError) as e:
        client.batches.create(
            input_file_id=fid, endpoint="/v1/images/generations", completion_window="24h"
        )
    assert e.value.code == "invalid_value" and e.value.param == "endpoint"
    with pytest.raises(openai.BadRequestError) as e:
        client.batches.create(input_file_id=fid, endpoint=CHAT, completion_window="soon")  # type: ignore[arg-type]
    assert e.value.param == "completion_window"
    with pytest.raises(openai.BadRequestError) as e:
        client.batches.create(
            input_file_id=fid,
            endpoint=CHAT,
            completion_window="24h",
            extra_body={"sites": ["mars"]},
        )
    assert e.value.param == "sites"
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint=CHAT, completion_window="24h")
    # A file just over the limit is refused while copied; a much larger one at the door
    for size in (MAX_FILE_BYTES + 1, 4 * MAX_FILE_BYTES):
        with pytest.raises(openai.APIStatusError) as big:
            client.files.create(file=("big.jsonl", b"x" * size), purpose="batch")
        assert big.value.status_code == 413
    assert [f.id for f in client.files.list()] == [fid]


def test_tenants_cannot_see_download_cancel_or_delete_each_others_objects(api: Api) -> None:
    # Given a file and a batch of tenant A
    a, b = api.client(api.key_a), api.client(api.key_b)
    fid = api.upload(a, "in.jsonl", [chat_line("a")])
    bid = a.batches.create(input_file_id=fid, endpoint=CHAT, completion_window="24h").id
    # When tenant B tries every route on them, Then B gets 404s and sees empty lists
    for call in (
        lambda: b.files.retrieve(fid),
        lambda: b.files.content(fid),
        lambda: b.files.delete(fid),
        lambda: b.batches.retrieve(bid),
        lambda: b.batches.cancel(bid),
        lambda: b.batches.create(input_file_id=fid, endpoint=CHAT, completion_window="24h"),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert list(b.files.list()) == [] and list(b.batches.list()) == []
    # And A still has both, untouched
    assert a.batches.retrieve(bid).status == "in_progress" and a.files.retrieve(fid).id == fid
    # And keys matter: none or a wrong one is 401, a tenant key is 403 on admin endpoints
    with pytest.raises(openai.AuthenticationError):
        api.client("gs-wrong").batches.list()
    assert httpx.get(f"{api.base_url}/v1/batches").status_code == 401
    fleet_url = f"{api.base_url}/v1/fleet"
    assert httpx.get(fleet_url, headers={"Authorization": f"Bearer {api.key_a}"}).status_code == 403
    fleet = httpx.get(fleet_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
    assert fleet["object"] == "fleet" and [m["name"] for m in fleet["models"]] == [
        "tiny-chat",
        "llama-3.1-8b-instruct",
    ]
    assert httpx.get(f"{api.base_url}/healthz").json()["status"] == "ok"
