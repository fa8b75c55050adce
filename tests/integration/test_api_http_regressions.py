"""HTTP regressions found by fuzzing: inputs that once gave a 500 or a vague error, on both databases."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from scheduler.config import Settings
from scheduler.store.db import make_engine, session_factory
from scheduler.store.migrate import upgrade
from scheduler.store.tenants import create_api_key
from tests.integration.api_harness import CHAT, chat_line, running_server, write_fleet

pytestmark = pytest.mark.integration


@dataclass
class Api:
    base_url: str
    key: str

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.key}", **kwargs.pop("headers", {})}
        return requests.request(method, self.base_url + path, headers=headers, timeout=30, **kwargs)

    def create(self, raw_json: str) -> requests.Response:
        """POST /v1/batches with a raw body (JSON allows NaN, Infinity and escapes json= cannot)."""
        return self.call(
            "POST",
            "/v1/batches",
            data=raw_json.encode(),
            headers={"Content-Type": "application/json"},
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    """A running server on SQLite or PostgreSQL with one tenant's key."""
    url = (
        f"sqlite:///{tmp_path / 'api.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    engine = make_engine(url)
    upgrade(engine)
    with session_factory(engine)() as s:
        key = create_api_key(s, f"acme-{uuid.uuid4().hex[:8]}")
        s.commit()
    engine.dispose()
    settings = Settings(data_dir=tmp_path / "data", database_url=url, fleet=write_fleet(tmp_path))
    with running_server(settings) as base_url:
        yield Api(base_url=base_url, key=key)


def envelope(response: requests.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_ids_cursors_and_names_with_nul_are_client_errors(api: Api) -> None:
    # When ids, cursors, filters and file names carry a NUL (PostgreSQL answered these with 500)
    # Then each is a 4xx in OpenAI's envelope, or a normal answer
    for method, path, status in [
        ("GET", "/v1/files/%00", 404),
        ("GET", "/v1/files/%00/content", 404),
        ("DELETE", "/v1/files/%00", 404),
        ("GET", "/v1/batches/%00", 404),
        ("POST", "/v1/batches/%00/cancel", 404),
        ("GET", "/v1/files?after=%00", 400),
        ("GET", "/v1/batches?after=%00", 400),
    ]:
        response = api.call(method, path)
        assert response.status_code == status, (path, response.text)
        assert envelope(response)["message"], path
    # A NUL in any query parameter is a 400 at the door, whatever the route
    for path in ("/v1/files?purpose=%00", "/v1/forecasts/accuracy?site=%00", "/v1/plans?x=a%00b"):
        response = api.call("GET", path)
        assert response.status_code == 400, (path, response.text)
        assert "NUL" in envelope(response)["message"]
    uploaded = api.call(
        "POST", "/v1/files", files={"file": ("a\x00.jsonl", b"{}\n")}, data={"purpose": "batch"}
    )
    assert uploaded.status_code == 200 and uploaded.json()["filename"] == "a.jsonl"


def test_create_options_that_crashed_are_refused_and_create_nothing(api: Api) -> None:
    # Given an accepted input file
    file_id = api.call(
        "POST",
        "/v1/files",
        files={"file": ("in.jsonl", (chat_line("r1") + "\n").encode())},
        data={"purpose": "batch"},
    ).json()["id"]
    base = f'"input_file_id": "{file_id}", "endpoint": "{CHAT}"'

    def opt(extra: str) -> str:
        return "{" + base + ", " + extra + "}"

    cases = [
        (opt('"deadline": 1e400'), 400, "deadline"),
        (opt('"deadline": NaN'), 400, "deadline"),
        (opt('"deadline": "99999999999999999999"'), 400, "deadline"),
        (opt('"deadline": "\u00b2"'), 400, "deadline"),
        (opt('"completion_window": "99999999999d"'), 400, "completion_window"),
        (opt('"priority": Infinity'), 400, "priority"),
        (opt('"min_quality": -Infinity'), 400, "min_quality"),
        (opt('"priority": true'), 400, "priority"),  # was silently 1.0
        (opt('"min_quality": "0.5"'), 400, "min_quality"),  # was silently 0.5
        (opt('"metadata": {"k": "\\ud800"}'), 400, "metadata"),
        (opt('"metadata": {"k": "\\u0000"}'), 400, "metadata"),
        ('{"input_file_id": "\\ud800", "endpoint": "' + CHAT + '"}', 404, None),
        ('{"input_file_id": "\\u0000", "endpoint": "' + CHAT + '"}', 404, None),
    ]
    for raw, status, param in cases:
        # When a batch is created with an option JSON allows but nothing can store
        response = api.create(raw)
        # Then it is a 4xx naming the parameter
        assert response.status_code == status, (raw, response.text)
        assert envelope(response)["param"] == param, raw
    # And no batch was created by any of them (one with a bad metadata value used to be)
    assert api.call("GET", "/v1/batches").json()["data"] == []


def test_framework_errors_say_what_is_wrong(api: Api) -> None:
    # When the body is not JSON, not an object, or the route or method does not exist
    not_json = api.create('{"input_file_id": ')
    not_object = api.create("[1, 2]")
    no_route = api.call("GET", "/v1/nothing-here")
    wrong_method = api.call("PUT", "/v1/batches")
    # Then each error's message says what is wrong (they were "invalid request" or "Not Found")
    assert "not valid JSON" in envelope(not_json)["message"]
    assert envelope(not_object)["message"].startswith("request body: ")
    assert envelope(no_route)["code"] == "not_found"
    assert "/v1/nothing-here" in envelope(no_route)["message"]
    assert wrong_method.status_code == 405 and "POST" in wrong_method.headers["allow"]
    assert "PUT" in envelope(wrong_method)["message"]


def test_openapi_documents_the_error_envelope_instead_of_fastapi_422(api: Api) -> None:
    # Given the schema clients and fuzzers read
    schema = requests.get(f"{api.base_url}/openapi.json", timeout=30).json()
    operations = [op for ops in schema["paths"].values() for op in ops.values()]
    # Then no operation documents 422 (never sent) and every one documents the 400 envelope
    assert all("422" not in op["responses"] for op in operations)
    ref = {"$ref": "#/components/schemas/OpenAIError"}
    assert all(
        op["responses"]["400"]["content"]["application/json"]["schema"] == ref for op in operations
    )
    # And file content is documented as bytes, not JSON
    content = schema["paths"]["/v1/files/{file_id}/content"]["get"]["responses"]["200"]
    assert list(content["content"]) == ["application/octet-stream"]
