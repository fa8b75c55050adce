"""Regressions found by fuzzing the API: each input here once crashed a request or was misread."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.domain import Fleet, ModelSpec, Pool, Profile, Site
from scheduler.errors import InvalidInput, NotFound
from scheduler.intake import validate as v
from scheduler.intake.submit import BatchOptions, check_options, parse_window, resolve_deadline
from scheduler.intake.validate import scan_lines
from scheduler.store.batches import get_batch
from scheduler.store.files import get_file, list_files, save_file
from scheduler.store.paging import cursor_page, storable
from scheduler.store.tables import File
from scheduler.store.tenants import create_tenant

CREATED = 1_800_000_000
FLEET = Fleet(
    slot_minutes=60,
    sites=(Site("site-a", 1.2, 0.5, 1.5, (Pool("cpu", "CPU", 1),)),),
    models=(ModelSpec("tiny-chat", 0.3, {"CPU": Profile(1, 500, 50, 30)}),),
)
CHAT = "/v1/chat/completions"
MODELS = frozenset({"tiny-chat"})
# Strings a JSON body can carry but a database column cannot store (PostgreSQL refuses NUL;
# UTF-8 has no lone surrogates, so SQLite's driver and the JSON encoder fail on them).
UNSTORABLE = ["a\x00b", "\ud800", "x\udfff"]


def line(cid: Any = "a", **body: Any) -> bytes:
    b = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], **body}
    return json.dumps({"custom_id": cid, "method": "POST", "url": CHAT, "body": b}).encode()


def scan(raw: bytes) -> v.ScanResult:
    return scan_lines(
        io.BytesIO(raw), endpoint=CHAT, models=MODELS, min_quality=None, max_requests=100
    )


def test_a_message_role_that_is_a_list_is_a_line_error_not_a_crash() -> None:
    # Given a line whose role is unhashable (a list): `role in frozenset` used to raise TypeError
    raw = line(messages=[{"role": ["user"], "content": "hi"}]) + b"\n"
    # When scanned
    res = scan(raw)
    # Then it is reported on line 1 as an invalid role
    assert [(e.line, e.code, e.param) for e in res.errors] == [
        (1, v.INVALID_VALUE, "body.messages[0].role")
    ]


@pytest.mark.parametrize("cid", UNSTORABLE)
def test_custom_ids_the_database_cannot_store_are_refused_on_their_line(cid: str) -> None:
    # Given a good line, then one whose custom_id has a NUL or a lone surrogate (JSON escapes)
    raw = line("ok") + b"\n" + line(cid) + b"\n"
    # When scanned
    res = scan(raw)
    # Then line 2 is an invalid custom_id (it used to fail the insert with a 500)
    assert [(e.line, e.code) for e in res.errors] == [(2, v.INVALID_CUSTOM_ID)]


@pytest.mark.parametrize(
    "bad",
    [
        line().decode().encode("utf-16"),  # json.loads(bytes) used to guess UTF-16 and accept it
        line().replace(b'"hi"', b'"caf\xe9"'),  # Latin-1
        b"\xef\xbb\xbf" + line(),  # a BOM on a line other than the first
    ],
)
def test_lines_that_are_not_plain_utf8_json_are_refused_on_their_line(bad: bytes) -> None:
    # Given a good first line and a second line that is not plain UTF-8 JSON
    raw = line("first") + b"\r\n" + bad + b"\r\n"
    # When scanned
    res = scan(raw)
    # Then exactly line 2 is an invalid JSON line and line 1 is a request
    assert [(e.line, e.code) for e in res.errors] == [(2, v.INVALID_JSON_LINE)]
    assert res.custom_ids == ["first"]


def test_a_bom_and_crlf_endings_still_give_offsets_that_read_back_exactly() -> None:
    # Given a Windows file: BOM, CRLF endings, a blank CRLF line, last line without a newline
    raw = b"\xef\xbb\xbf" + line("a") + b"\r\n\r\n" + line("b") + b"\r\n" + line("c")
    # When scanned
    res = scan(raw)
    # Then every request's slice is exactly its JSON, as the worker reads it back
    assert res.ok and list(res.line_no) == [1, 3, 4]
    for cid, off, n in zip(res.custom_ids, res.byte_offset, res.byte_len, strict=True):
        assert raw[off : off + n] == line(cid)


def test_a_json_error_is_positioned_within_its_own_line() -> None:
    # Given a truncated second line (the parser saw the terminator and said "line 2 column 1")
    raw = line("a") + b"\n" + line("b")[:20] + b"\n"
    # When scanned
    res = scan(raw)
    # Then the message names a character of that line, not a line of the parser's own
    (err,) = res.errors
    assert err.line == 2 and "at character" in err.message and "line 2" not in err.message


def test_huge_values_do_not_make_huge_error_messages() -> None:
    # Given a line whose role is a 100,000-character string
    raw = line(messages=[{"role": "r" * 100_000, "content": "hi"}]) + b"\n"
    # When scanned
    res = scan(raw)
    # Then the error quotes a cut value (a thousand such lines would otherwise be 100 MB)
    assert res.errors[0].code == v.INVALID_VALUE and len(res.errors[0].message) < 300


@pytest.mark.parametrize(
    "deadline", [1e20, float("inf"), float("nan"), 10**30, str(10**30), "\u00b2", "\u0663\u0663"]
)
def test_deadlines_outside_the_calendar_are_refused_not_crashed(deadline: object) -> None:
    # When a deadline overflows datetime, is not a number or uses non-ASCII digits
    with pytest.raises(InvalidInput) as e:
        resolve_deadline(CREATED, "24h", deadline)  # type: ignore[arg-type]
    # Then it is a 400 naming the parameter (it used to be OverflowError/ValueError, a 500)
    assert e.value.errors[0].param == "deadline"


def test_a_deadline_before_year_one_in_utc_is_refused_not_crashed() -> None:
    with pytest.raises(InvalidInput) as e:
        resolve_deadline(CREATED, "24h", "0001-01-01T00:00:00+14:00")
    assert e.value.errors[0].param == "deadline"


@pytest.mark.parametrize("window", ["99999999999d", "9999999h", "\u0663h", "3651d"])
def test_windows_too_long_or_with_non_ascii_digits_are_refused(window: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_window(window)
    assert e.value.errors[0].param == "completion_window"


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"priority": float("inf")}, "priority"),
        ({"priority": float("nan")}, "priority"),
        ({"min_quality": float("-inf")}, "min_quality"),
        ({"min_quality": float("nan")}, "min_quality"),
        ({"metadata": {"k": "a\x00b"}}, "metadata"),
        ({"metadata": {"\ud800": "v"}}, "metadata"),
        ({"metadata": {"k": "\udfff"}}, "metadata"),
    ],
)
def test_non_finite_numbers_and_unstorable_metadata_are_refused(
    changes: dict[str, object], param: str
) -> None:
    # Given options JSON allows (Infinity, NaN, \\u0000, lone surrogates)
    options = replace(BatchOptions(input_file_id="file-x", endpoint=CHAT), **changes)  # type: ignore[arg-type]
    # When checked, Then they are refused naming the parameter (they used to be stored)
    with pytest.raises(InvalidInput) as e:
        check_options(options, FLEET)
    assert e.value.errors[0].param == param


@pytest.mark.parametrize("text", UNSTORABLE)
def test_storable_refuses_nul_and_lone_surrogates(text: str) -> None:
    assert not storable(text)
    assert storable("plain") and storable("café ✓")


@pytest.mark.parametrize("bad_id", UNSTORABLE)
def test_ids_that_cannot_exist_are_not_found_and_bad_cursors_are_client_errors(
    sessions: sessionmaker[Session], bad_id: str
) -> None:
    # Given a tenant with no objects
    with sessions() as s:
        tenant = create_tenant(s, "acme").id
        s.commit()
        # When ids or cursors the database cannot hold are looked up
        # Then they are NotFound / InvalidInput / an empty page, not a driver error (500)
        with pytest.raises(NotFound):
            get_file(s, tenant, bad_id)
        with pytest.raises(NotFound):
            get_batch(s, tenant, bad_id)
        with pytest.raises(InvalidInput) as e:
            cursor_page(s, select(File), File.id, after=bad_id, limit=10)
        assert e.value.errors[0].param == "after"
        assert list_files(s, tenant, purpose=bad_id) == ([], False)


def test_a_filename_with_nul_is_stored_without_it(
    sessions: sessionmaker[Session], tmp_path: Any
) -> None:
    # Given an upload named with a NUL character (PostgreSQL refused the row with a 500)
    with sessions() as s:
        tenant = create_tenant(s, "acme").id
        # When it is saved
        row = save_file(
            s,
            tmp_path,
            io.BytesIO(b"{}\n"),
            tenant_id=tenant,
            filename="a\x00b.jsonl",
            purpose="batch",
        )
        # Then the NUL is dropped and the content is there
        assert row.filename == "ab.jsonl"
        assert get_file(s, tenant, row.id).bytes == 3
