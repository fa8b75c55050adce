"""Fuzzing the OpenAI-compatible API over real HTTP: schema-driven cases and malformed JSONL files."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from scheduler.config import Settings
from scheduler.store.db import make_engine, session_factory
from scheduler.store.migrate import upgrade
from scheduler.store.tables import Batch, BatchRequest, File
from scheduler.store.tenants import create_api_key
from tests.integration.api_harness import CHAT, chat_line, running_server, write_fleet
from workers.requests_io import read_requests

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_FILE_BYTES = 1 << 20
# Deterministic in CI (a failure reproduces on the next run); random locally to explore more.
DERANDOMIZE = os.environ.get("CI") == "true"
# Deeper local runs: FUZZ_SCALE=10 multiplies every example count; FUZZ_DATABASE=postgresql.
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
FUZZED_PREFIXES = (
    "/v1/files",
    "/v1/batches",
    "/v1/fleet",
    "/v1/models",
    "/v1/uploads",
    "/v1/webhook_endpoints",
)
NOT_FUZZED = {
    "/v1/batches/{batch_id}/review",  # review routes belong to the review API tests
    "/v1/webhook_endpoints/{endpoint_id}/test",  # sends HTTP to the URL: tests/integration/test_webhooks.py
}
VAGUE_MESSAGES = {"invalid request", "bad request", "error", "not found", "internal server error"}


@dataclass
class Server:
    """A running gridshift on SQLite with one tenant (admin key) and some accepted objects."""

    base_url: str
    key: str
    database_url: str
    files: dict[str, bytes] = field(default_factory=dict)  # accepted file id -> content
    batches: dict[str, str] = field(default_factory=dict)  # created batch id -> status

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def upload(self, content: bytes, name: str = "in.jsonl") -> requests.Response:
        return requests.post(
            f"{self.base_url}/v1/files",
            headers=self.headers,
            files={"file": (name, content)},
            data={"purpose": "batch"},
            timeout=30,
        )

    def create_batch(self, file_id: str, **extra: Any) -> requests.Response:
        body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h", **extra}
        return requests.post(
            f"{self.base_url}/v1/batches", headers=self.headers, json=body, timeout=60
        )


def examples(n: int) -> int:
    """``n`` examples, scaled by ``FUZZ_SCALE``."""
    return max(1, round(n * SCALE))


# Databases the fuzz suite runs on: FUZZ_DATABASE (comma-separated), else both under CI=true
# (PostgreSQL refuses values SQLite stores, e.g. NUL in text), else SQLite only (fast locally).
FUZZ_DATABASES = os.environ.get("FUZZ_DATABASE") or (
    "sqlite,postgresql" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "sqlite"
)


@pytest.fixture(scope="module", params=FUZZ_DATABASES.split(","))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The real app under uvicorn on 127.0.0.1, with a good file and a batch already accepted."""
    tmp = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{tmp / 'api.db'}"
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    engine = make_engine(url)
    upgrade(engine)
    with session_factory(engine)() as s:
        key = create_api_key(s, f"fuzz-{uuid.uuid4().hex[:8]}", admin=True)
        s.commit()
    engine.dispose()
    config = Settings(
        data_dir=tmp / "data",
        database_url=url,
        fleet=write_fleet(tmp),
        max_file_bytes=MAX_FILE_BYTES,
    )
    with running_server(config) as base_url:
        srv = Server(base_url=base_url, key=key, database_url=url)
        good = "\n".join(chat_line(f"seed-{i}", max_tokens=8) for i in range(3)).encode() + b"\n"
        file_id = srv.upload(good).json()["id"]
        srv.files[file_id] = good
        batch = srv.create_batch(file_id).json()
        srv.batches[batch["id"]] = batch["status"]
        yield srv


def assert_nothing_lost(srv: Server) -> None:
    """Every file and batch accepted so far is still there, unchanged (a few requests only).

    Files are compared through the API's list (sizes) and the first and newest file's bytes;
    batch statuses in one database query (listing hundreds of batches with their summaries
    over HTTP after every example would dominate the run), the first and newest also over HTTP.
    """
    listed = requests.get(f"{srv.base_url}/v1/files", headers=srv.headers, timeout=30).json()
    sizes = {f["id"]: f["bytes"] for f in listed["data"]}
    assert {fid: len(content) for fid, content in srv.files.items()}.items() <= sizes.items()
    for file_id in (next(iter(srv.files)), next(reversed(srv.files))):
        got = requests.get(
            f"{srv.base_url}/v1/files/{file_id}/content", headers=srv.headers, timeout=30
        )
        assert got.status_code == 200 and got.content == srv.files[file_id], file_id
    engine = make_engine(srv.database_url)
    try:
        with session_factory(engine)() as s:
            rows = s.execute(select(Batch.id, Batch.status).where(Batch.id.in_(srv.batches)))
            statuses = {batch_id: status for batch_id, status in rows}
    finally:
        engine.dispose()
    assert srv.batches == statuses
    for batch_id in (next(iter(srv.batches)), next(reversed(srv.batches))):
        got = requests.get(f"{srv.base_url}/v1/batches/{batch_id}", headers=srv.headers, timeout=30)
        assert got.status_code == 200 and got.json()["status"] == srv.batches[batch_id], batch_id


# --- schema-driven fuzzing -------------------------------------------------------------------


def error_envelope_says_what_is_wrong(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 4xx answer is OpenAI's error envelope with a specific message."""
    if not 400 <= response.status_code < 500:
        return None
    body = json.loads(response.content)
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, body
    message = error["message"]
    assert isinstance(message, str) and len(message) >= 12, body
    assert message.strip().lower() not in VAGUE_MESSAGES, body
    assert error["type"] == "invalid_request_error", body
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    error_envelope_says_what_is_wrong,
]


OPERATIONS = [
    ("POST", "/v1/files"),
    ("GET", "/v1/files"),
    ("GET", "/v1/files/{file_id}"),
    ("GET", "/v1/files/{file_id}/content"),
    ("DELETE", "/v1/files/{file_id}"),
    ("POST", "/v1/batches"),
    ("GET", "/v1/batches"),
    ("GET", "/v1/batches/{batch_id}"),
    ("POST", "/v1/batches/{batch_id}/cancel"),
    ("GET", "/v1/batches/{batch_id}/explain"),
    ("GET", "/v1/fleet"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model_id}"),
    ("POST", "/v1/uploads"),
    ("POST", "/v1/uploads/{upload_id}/parts"),
    ("POST", "/v1/uploads/{upload_id}/complete"),
    ("POST", "/v1/uploads/{upload_id}/cancel"),
    ("POST", "/v1/webhook_endpoints"),
    ("GET", "/v1/webhook_endpoints"),
    ("GET", "/v1/webhook_endpoints/{endpoint_id}"),
    ("POST", "/v1/webhook_endpoints/{endpoint_id}"),
    ("POST", "/v1/webhook_endpoints/{endpoint_id}/rotate_secret"),
    ("DELETE", "/v1/webhook_endpoints/{endpoint_id}"),
    ("GET", "/v1/webhook_endpoints/{endpoint_id}/deliveries"),
]


def test_every_openai_compatible_operation_of_the_schema_is_fuzzed(server: Server) -> None:
    # Given the schema the app serves
    paths = requests.get(f"{server.base_url}/openapi.json", timeout=30).json()["paths"]
    # When its files, batches and fleet operations are listed
    listed = {
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith(FUZZED_PREFIXES) and path not in NOT_FUZZED
        for method in operations
    }
    # Then the fuzz test below covers exactly them
    assert listed == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_fuzzed_requests_never_fail_the_server_and_answer_as_documented(
    server: Server, method: str, path: str
) -> None:
    # Given the app's OpenAPI schema, served by the app itself, and objects that exist (fresh
    # ones for the operations that delete or cancel, so the seeded ones must survive)
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    operation = schema[path][method]
    seed_file, seed_batch = next(iter(server.files)), next(iter(server.batches))
    real_ids = {"file_id": seed_file, "batch_id": seed_batch}
    if method == "DELETE":
        real_ids["file_id"] = server.upload(b"{}\n").json()["id"]
    if path.endswith("/cancel"):
        real_ids["batch_id"] = server.create_batch(seed_file).json()["id"]
    path_ids = {k: v for k, v in real_ids.items() if "{" + k + "}" in path}

    def exercise(mode: GenerationMode, examples: int) -> None:
        strategies = [operation.as_strategy(generation_mode=mode)]
        if path_ids and mode is GenerationMode.POSITIVE:  # also hit objects that exist
            strategies.append(operation.as_strategy(generation_mode=mode, path_parameters=path_ids))

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=DERANDOMIZE,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=st.one_of(strategies), use_real_file=st.booleans())
        def run(case: Any, use_real_file: bool) -> None:
            if use_real_file and isinstance(case.body, dict) and "input_file_id" in case.body:
                case.body["input_file_id"] = seed_file
            # When the case is sent over real HTTP
            response = case.call(base_url=server.base_url, headers=server.headers, timeout=60)
            # Then no 5xx, the status and body are documented, errors say what is wrong, and
            # invalid requests are refused
            extra = [negative_data_rejection] if mode is GenerationMode.NEGATIVE else []
            case.validate_response(response, checks=CHECKS + extra)
            if response.status_code < 300 and method == "POST" and path == "/v1/batches":
                server.batches[response.json()["id"]] = response.json()["status"]

        run()

    # When valid and invalid requests are generated for this operation
    exercise(GenerationMode.POSITIVE, examples(25))
    # (an operation whose only input is a free string id has no invalid requests to make)
    with contextlib.suppress(Unsatisfiable):
        exercise(GenerationMode.NEGATIVE, examples(15))
    # Then nothing accepted before is lost
    assert_nothing_lost(server)


# --- malformed JSONL uploads -----------------------------------------------------------------

GOOD, BLANK, BAD, UNKNOWN = "good", "blank", "bad", "unknown"


def _good_line(i: int, size: int) -> tuple[str, bytes]:
    return GOOD, chat_line(f"req-{i}", text="x" * size, max_tokens=4).encode()


def _bad_line(i: int, kind: str) -> tuple[str, bytes]:
    line = chat_line(f"bad-{i}").encode()
    if kind == "truncated":
        return BAD, line[: len(line) // 2]
    if kind == "latin1":
        return BAD, line.replace(b"Say hi.", b"caf\xe9")  # Latin-1, not UTF-8
    if kind == "invalid-utf8":
        return BAD, b"\xff\xfe" + line
    if kind == "utf16":
        return BAD, line.decode().encode("utf-16")
    if kind == "not-object":
        return BAD, b'["a", 1]'
    if kind == "nul-custom-id":
        return BAD, chat_line(f"bad\x00{i}").encode()
    if kind == "surrogate-custom-id":
        return BAD, line.replace(f'"bad-{i}"'.encode(), f'"bad-{i}\\ud800"'.encode())
    if kind == "list-role":
        obj = json.loads(line)
        obj["body"]["messages"][0]["role"] = ["user"]
        return BAD, json.dumps(obj).encode()
    raise AssertionError(kind)


BAD_KINDS = [
    "truncated",
    "latin1",
    "invalid-utf8",
    "utf16",
    "not-object",
    "nul-custom-id",
    "surrogate-custom-id",
    "list-role",
]


@st.composite
def jsonl_files(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """A JSONL file of good, blank, bad and random lines; returns its bytes and each line's kind."""
    n = draw(st.integers(1, 8))
    lines: list[tuple[str, bytes]] = []
    for i in range(n):
        kind = draw(st.sampled_from(["good", "good", "good", "huge", "blank", "bad", "random"]))
        if kind == "good":
            lines.append(_good_line(i, draw(st.integers(0, 40))))
        elif kind == "huge":
            lines.append(_good_line(i, draw(st.integers(20_000, 60_000))))
        elif kind == "blank":
            lines.append((BLANK, draw(st.sampled_from([b"", b" ", b"\t", b"  \t ", b"\r"]))))
        elif kind == "bad":
            lines.append(_bad_line(i, draw(st.sampled_from(BAD_KINDS))))
        else:
            raw = draw(st.binary(max_size=64)).replace(b"\n", b" ").replace(b"\r", b" ")
            lines.append((UNKNOWN, raw))
    endings = draw(st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=n, max_size=n))
    if draw(st.booleans()):  # the last line without a terminator
        endings[-1] = b""
    bom = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    content = bom + b"".join(line + eol for (_, line), eol in zip(lines, endings, strict=True))
    return content, [kind for kind, _ in lines]


def stored_requests(srv: Server, batch_id: str) -> tuple[Path, list[tuple[str, int, int]]]:
    """The batch's input file path and its requests' (custom_id, byte_offset, byte_len)."""
    engine = make_engine(srv.database_url)
    try:
        with session_factory(engine)() as s:
            path = s.scalar(
                select(File.path)
                .join(Batch, Batch.input_file_id == File.id)
                .where(Batch.id == batch_id)
            )
            rows = s.execute(
                select(BatchRequest.custom_id, BatchRequest.byte_offset, BatchRequest.byte_len)
                .where(BatchRequest.batch_id == batch_id)
                .order_by(BatchRequest.line_no)
            ).all()
    finally:
        engine.dispose()
    assert path is not None
    return Path(path), [(cid, off, n) for cid, off, n in rows]


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@settings(
    max_examples=examples(25),
    deadline=None,
    database=None,
    derandomize=DERANDOMIZE,
    suppress_health_check=list(HealthCheck),
)
@given(upload=jsonl_files())
def test_malformed_jsonl_never_fails_the_server_and_loses_nothing(
    server: Server, upload: tuple[bytes, list[str]]
) -> None:
    # Given a file of good lines, blank lines, malformed lines and random bytes (BOM, CRLF, ...)
    content, kinds = upload
    # When it is uploaded and a batch is created from it
    uploaded = server.upload(content)
    assert uploaded.status_code == 200, uploaded.text
    file_id = uploaded.json()["id"]
    created = server.create_batch(file_id)
    # Then the answer is a batch, failed with line-numbered errors or in progress
    assert created.status_code == 200, created.text
    batch = created.json()
    errors = (batch["errors"] or {}).get("data", [])
    error_lines = {e["line"] for e in errors if e["line"] is not None}
    bad_lines = {i + 1 for i, kind in enumerate(kinds) if kind == BAD}
    good_lines = [i + 1 for i, kind in enumerate(kinds) if kind == GOOD]
    if bad_lines:
        assert batch["status"] == "failed"
        assert bad_lines <= error_lines, (errors, kinds)
    assert error_lines.isdisjoint(good_lines), (errors, kinds)
    assert all(e["code"] and len(e["message"]) >= 12 for e in errors), errors
    if set(kinds) <= {GOOD, BLANK}:
        assert batch["status"] == ("in_progress" if good_lines else "failed"), batch
    if batch["status"] == "in_progress":
        assert not errors and batch["request_counts"]["total"] == len(good_lines)
        # And every stored offset reads back, with the worker's own reader, to its request
        path, index = stored_requests(server, batch["id"])
        read = read_requests(path, index)
        assert [r.custom_id for r in read] == [cid for cid, _, _ in index]
        assert [r.body["messages"][0]["role"] for r in read] == ["user"] * len(read)
    else:
        assert batch["status"] == "failed" and errors
    # And nothing accepted before (or now) is lost
    server.files[file_id] = content
    server.batches[batch["id"]] = batch["status"]
    assert_nothing_lost(server)
