"""OpenAI's Uploads API with the official client against a real server (uvicorn, real HTTP).

A few MB in several parts: ``upload_file_chunked`` with md5, a file ``batches.create`` takes,
parts assembled in the order given, cancel, a wrong part id, another tenant's upload, limits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from scheduler.config import Settings
from scheduler.store.uploads import UPLOADS_DIR
from tests.factories import tenant_keys
from tests.integration.api_harness import CHAT, chat_line, running_server, write_fleet

pytestmark = pytest.mark.integration

PART_BYTES = 1024 * 1024


@dataclass
class Api:
    base_url: str
    key_a: str
    key_b: str
    tmp: Path
    files_dir: Path

    def client(self, key: str | None = None) -> OpenAI:
        return OpenAI(
            base_url=f"{self.base_url}/v1", api_key=key or self.key_a, max_retries=0, timeout=60
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    """A running server whose uploads take parts of at most 2 MiB and 16 MiB in all."""
    url = (
        f"sqlite:///{tmp_path / 'api.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        fleet=write_fleet(tmp_path),
        max_file_bytes=PART_BYTES,  # /v1/files would refuse the whole file
        max_upload_part_bytes=2 * PART_BYTES,
        max_upload_bytes=16 * PART_BYTES,
    )
    key_a, key_b = tenant_keys(url, "acme", "globex")
    with running_server(settings) as base_url:
        yield Api(base_url, key_a, key_b, tmp_path, settings.files_dir)


def _requests_file(path: Path, n: int) -> bytes:
    lines = [chat_line(f"r{i}", text=f"request {i} " + "x" * 900, max_tokens=8) for i in range(n)]
    content = ("\n".join(lines) + "\n").encode()
    path.write_bytes(content)
    return content


def test_upload_file_chunked_sends_a_large_file_that_batches_create_takes(api: Api) -> None:
    # Given a 3.6 MB request file, over this server's 1 MiB /v1/files limit
    path = api.tmp / "big.jsonl"
    content = _requests_file(path, 3_800)
    client = api.client()
    with pytest.raises(openai.APIStatusError) as too_big:
        client.files.create(file=path, purpose="batch")
    assert too_big.value.status_code == 413 and "POST /v1/uploads" in str(too_big.value)

    # When the official client sends it in 1 MiB parts with its md5
    upload = client.uploads.upload_file_chunked(
        file=path,
        mime_type="application/jsonl",
        purpose="batch",
        part_size=PART_BYTES,
        md5=hashlib.md5(content, usedforsecurity=False).hexdigest(),
    )

    # Then the upload is completed with a batch file holding exactly those bytes
    assert (upload.object, upload.status, upload.bytes, upload.filename) == (
        "upload",
        "completed",
        len(content),
        "big.jsonl",
    )
    assert upload.file is not None and upload.file.bytes == len(content)
    assert client.files.content(upload.file.id).read() == content
    assert not any((api.files_dir / UPLOADS_DIR).iterdir())  # parts removed once assembled

    # And batches.create takes the file and counts its requests
    batch = client.batches.create(
        input_file_id=upload.file.id, endpoint=CHAT, completion_window="24h"
    )
    assert batch.status == "in_progress"
    assert batch.request_counts is not None and batch.request_counts.total == 3_800


def test_parts_are_assembled_in_the_order_complete_lists_them(api: Api) -> None:
    # Given an upload whose three parts arrive out of order
    client = api.client()
    pieces = [b"first line\n", b"second line\n" * 3, b"third\n"]
    upload = client.uploads.create(
        bytes=sum(map(len, pieces)),
        filename="ordered.jsonl",
        mime_type="application/jsonl",
        purpose="batch",
    )
    assert (upload.status, upload.expires_at - upload.created_at) == ("pending", 3_600)
    third, first, second = (
        client.uploads.parts.create(upload_id=upload.id, data=p)
        for p in (pieces[2], pieces[0], pieces[1])
    )
    assert (third.object, third.upload_id) == ("upload.part", upload.id)

    # When complete lists an unknown part id, a repeated one, too few parts or a wrong md5
    bad_calls = {
        "part_idx": [first.id, "part_idx", third.id],
        "more than once": [first.id, first.id, third.id],
        "created for": [first.id, second.id],
    }
    for expected, part_ids in bad_calls.items():
        with pytest.raises(openai.BadRequestError) as bad:
            client.uploads.complete(upload_id=upload.id, part_ids=part_ids)
        assert expected in str(bad.value)
    ids = [first.id, second.id, third.id]
    with pytest.raises(openai.BadRequestError) as wrong_md5:
        client.uploads.complete(upload_id=upload.id, part_ids=ids, md5="0" * 32)
    assert wrong_md5.value.body["param"] == "md5"  # type: ignore[index]

    # Then nothing was made, and the right call assembles the parts in the listed order
    done = client.uploads.complete(
        upload_id=upload.id,
        part_ids=ids,
        md5=hashlib.md5(b"".join(pieces), usedforsecurity=False).hexdigest(),
    )
    assert done.status == "completed" and done.file is not None
    assert client.files.content(done.file.id).read() == b"".join(pieces)
    assert [f.id for f in client.files.list()] == [done.file.id]

    # And a completed upload takes no more parts and cannot be completed or cancelled again
    for call in (
        lambda: client.uploads.parts.create(upload_id=upload.id, data=b"late\n"),
        lambda: client.uploads.complete(upload_id=upload.id, part_ids=ids),
        lambda: client.uploads.cancel(upload.id),
    ):
        with pytest.raises(openai.ConflictError):
            call()


def test_cancel_other_tenants_and_limits(api: Api) -> None:
    client, other = api.client(), api.client(api.key_b)
    upload = client.uploads.create(
        bytes=10, filename="a.jsonl", mime_type="application/jsonl", purpose="batch"
    )
    part = client.uploads.parts.create(upload_id=upload.id, data=b"0123456789")

    # Another tenant sees no such upload, whatever it tries
    for call in (
        lambda: other.uploads.parts.create(upload_id=upload.id, data=b"x"),
        lambda: other.uploads.complete(upload_id=upload.id, part_ids=[part.id]),
        lambda: other.uploads.cancel(upload.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()

    # A part over the part limit is refused before it is stored; so is an upload over the limit
    with pytest.raises(openai.APIStatusError) as big_part:
        client.uploads.parts.create(upload_id=upload.id, data=b"x" * (2 * PART_BYTES + 1))
    assert big_part.value.status_code == 413
    with pytest.raises(openai.APIStatusError) as big_upload:
        client.uploads.create(
            bytes=16 * PART_BYTES + 1, filename="b", mime_type="text/plain", purpose="batch"
        )
    assert big_upload.value.status_code == 413
    with pytest.raises(openai.BadRequestError):
        client.uploads.create(bytes=5, filename="c", mime_type="text/plain", purpose="vision")

    # Cancel: the upload reads cancelled, its parts are gone, it takes nothing more
    cancelled = client.uploads.cancel(upload.id)
    assert cancelled.status == "cancelled" and cancelled.file is None
    assert client.uploads.cancel(upload.id).status == "cancelled"  # again: no change
    assert not (api.files_dir / UPLOADS_DIR / upload.id).exists()
    with pytest.raises(openai.ConflictError):
        client.uploads.parts.create(upload_id=upload.id, data=b"x")
    with pytest.raises(openai.ConflictError):
        client.uploads.complete(upload_id=upload.id, part_ids=[part.id])
    assert list(client.files.list()) == []
