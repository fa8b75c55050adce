"""Validation of batch input lines: every error code is reported on the right line."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.intake import validate as v
from scheduler.intake.validate import scan_lines

MODELS = frozenset({"tiny-chat", "llama-3.1-8b-instruct"})
CHAT = "/v1/chat/completions"


def chat(cid: str = "a", **body: Any) -> dict[str, Any]:
    b = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hello there"}]}
    b.update(body)
    return {"custom_id": cid, "method": "POST", "url": CHAT, "body": b}


def encode(*items: Any) -> list[bytes]:
    return [(x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in items]


def scan(
    lines: list[bytes],
    endpoint: str = CHAT,
    min_quality: float | None = None,
    max_requests: int = 100,
):
    return scan_lines(
        lines, endpoint=endpoint, models=MODELS, min_quality=min_quality, max_requests=max_requests
    )


@pytest.mark.parametrize(
    ("bad", "code", "param"),
    [
        (b'{"custom_id": "x", ', v.INVALID_JSON_LINE, None),
        (b"\xff\xfe not utf-8", v.INVALID_JSON_LINE, None),
        ([1, 2, 3], v.INVALID_REQUEST_LINE, None),
        ({"method": "POST", "url": CHAT, "body": {}}, v.MISSING_CUSTOM_ID, "custom_id"),
        (chat(cid=""), v.INVALID_CUSTOM_ID, "custom_id"),
        (chat(cid="x" * 501), v.INVALID_CUSTOM_ID, "custom_id"),
        ({**chat("m"), "method": "GET"}, v.INVALID_METHOD, "method"),
        ({**chat("u"), "url": "/v1/completions"}, v.INVALID_URL, "url"),
        ({**chat("b"), "body": "text"}, v.INVALID_BODY, "body"),
        ({**chat("nm"), "body": {"messages": []}}, v.MISSING_PARAMETER, "body.model"),
        (chat("mt", model=7), v.INVALID_TYPE, "body.model"),
        (chat("unk", model="gpt-99"), v.MODEL_NOT_FOUND, "body.model"),
        (chat("auto", model="auto"), v.MIN_QUALITY_REQUIRED, "body.model"),
        ({**chat("nomsg"), "body": {"model": "tiny-chat"}}, v.MISSING_PARAMETER, "body.messages"),
        (chat("msgs", messages="hi"), v.INVALID_TYPE, "body.messages"),
        (chat("empty", messages=[]), v.INVALID_TYPE, "body.messages"),
        (
            chat("role", messages=[{"role": "robot", "content": "x"}]),
            v.INVALID_VALUE,
            "body.messages[0].role",
        ),
        (
            chat("content", messages=[{"role": "user"}]),
            v.MISSING_PARAMETER,
            "body.messages[0].content",
        ),
        (
            chat("ctype", messages=[{"role": "user", "content": 5}]),
            v.INVALID_TYPE,
            "body.messages[0].content",
        ),
        (chat("mx0", max_tokens=0), v.INVALID_VALUE, "body.max_tokens"),
        (chat("mxf", max_tokens=1.5), v.INVALID_VALUE, "body.max_tokens"),
        (chat("mxb", max_tokens=True), v.INVALID_VALUE, "body.max_tokens"),
        (chat("mct", max_completion_tokens=-3), v.INVALID_VALUE, "body.max_completion_tokens"),
        (chat("t", temperature=2.5), v.INVALID_VALUE, "body.temperature"),
        (chat("ts", temperature="hot"), v.INVALID_VALUE, "body.temperature"),
        (chat("tp", top_p=1.5), v.INVALID_VALUE, "body.top_p"),
        (chat("pp", presence_penalty=-3), v.INVALID_VALUE, "body.presence_penalty"),
        (chat("n", n=0), v.INVALID_VALUE, "body.n"),
        (chat("nb", n=17), v.INVALID_VALUE, "body.n"),
        (chat("nf", n=2.0), v.INVALID_VALUE, "body.n"),
        (chat("s", stream=True), v.INVALID_VALUE, "body.stream"),
    ],
)
def test_each_bad_line_is_reported_with_its_code_param_and_line_number(
    bad: Any, code: str, param: str | None
) -> None:
    # Given a file whose third line is bad between two good ones
    lines = encode(chat("good-1"), chat("good-2"), bad, chat("good-4"))
    # When it is scanned
    res = scan(lines)
    # Then exactly that line is reported, with the expected code and parameter
    assert [(e.line, e.code, e.param) for e in res.errors] == [(3, code, param)]
    assert not res.ok
    assert res.errors[0].message


def test_duplicate_custom_id_names_the_first_line() -> None:
    # Given the same custom_id on lines 1 and 3
    res = scan(encode(chat("same"), chat("other"), chat("same")))
    # Then line 3 is the duplicate and the message points to line 1
    assert [(e.line, e.code) for e in res.errors] == [(3, v.DUPLICATE_CUSTOM_ID)]
    assert "line 1" in res.errors[0].message


def test_every_bad_line_is_listed_not_just_the_first() -> None:
    # Given a file with bad lines 2, 4 and 5 (blank line 3 is skipped but counted)
    lines = [
        *encode(chat("a"), chat("b", temperature=9)),
        b"\n",
        *encode(b"nope", chat("e", model="x")),
    ]
    # When scanned
    res = scan(lines)
    # Then all bad lines are listed in order with their own codes
    assert [(e.line, e.code) for e in res.errors] == [
        (2, v.INVALID_VALUE),
        (4, v.INVALID_JSON_LINE),
        (5, v.MODEL_NOT_FOUND),
    ]


def test_error_list_is_capped_and_says_how_many_more(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a cap of 5 listed errors and 12 bad lines
    monkeypatch.setattr(v, "MAX_LISTED_ERRORS", 5)
    res = scan(encode(*[b"{" for _ in range(12)]))
    # Then 5 are listed, all 12 counted, and a final entry says 7 more
    listed = res.listed_errors()
    assert res.error_count == 12
    assert [e.line for e in listed[:5]] == [1, 2, 3, 4, 5]
    assert listed[-1].code == v.TOO_MANY_ERRORS and "7 more" in listed[-1].message


def test_empty_and_blank_files_are_rejected() -> None:
    for lines in ([], [b"\n", b"   \r\n"]):
        res = scan(lines)
        assert [(e.line, e.code) for e in res.errors] == [(None, v.EMPTY_FILE)]


def test_more_requests_than_the_limit_fails_the_file() -> None:
    res = scan(encode(*[chat(str(i)) for i in range(4)]), max_requests=3)
    assert [(e.line, e.code) for e in res.errors] == [(None, v.TOO_MANY_REQUESTS)]
    assert "3" in res.errors[0].message


def test_auto_model_is_accepted_when_the_batch_sets_min_quality() -> None:
    res = scan(encode(chat("a", model="auto"), chat("b")), min_quality=0.5)
    assert res.ok and res.models == ["auto", "tiny-chat"]


def test_offsets_and_lengths_point_at_each_request_json_exactly() -> None:
    # Given a file with CRLF, a BOM, a blank line and mixed models
    raw = b"\xef\xbb\xbf" + json.dumps(chat("a")).encode() + b"\r\n\n"
    raw += json.dumps(chat("b", model="llama-3.1-8b-instruct", max_tokens=40)).encode() + b"\n"
    raw += json.dumps(chat("c")).encode()  # no trailing newline
    lines = raw.splitlines(keepends=True)
    # When scanned
    res = scan(lines)
    # Then each (offset, length) slice parses back to the request with that custom_id
    assert res.ok and list(res.line_no) == [1, 3, 4]
    for i, cid in enumerate(res.custom_ids):
        chunk = raw[res.byte_offset[i] : res.byte_offset[i] + res.byte_len[i]]
        assert json.loads(chunk)["custom_id"] == cid
    assert list(res.max_tokens) == [0, 40, 0]
    assert [res.models[i] for i in res.model_index] == [
        "tiny-chat",
        "llama-3.1-8b-instruct",
        "tiny-chat",
    ]


def test_input_tokens_are_prompt_characters_over_four() -> None:
    msgs = [
        {"role": "system", "content": "x" * 40},
        {"role": "user", "content": [{"type": "text", "text": "y" * 80}]},
        {"role": "assistant", "content": None, "tool_calls": []},
    ]
    res = scan(encode(chat("a", messages=msgs)))
    assert list(res.input_tokens) == [30]


def test_completions_endpoint_checks_prompt() -> None:
    comp = "/v1/completions"

    def line(cid: str, **body: Any) -> dict[str, Any]:
        return {
            "custom_id": cid,
            "method": "POST",
            "url": comp,
            "body": {"model": "tiny-chat", **body},
        }

    res = scan(
        encode(
            line("a", prompt="abcd" * 10),
            line("b"),
            line("c", prompt={"x": 1}),
            line("d", prompt=["ab", "cd"]),
        ),
        endpoint=comp,
    )
    assert [(e.line, e.code, e.param) for e in res.errors] == [
        (2, v.MISSING_PARAMETER, "body.prompt"),
        (3, v.INVALID_TYPE, "body.prompt"),
    ]
    assert list(res.input_tokens) == [10, 1]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-3, 3) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
_lines = st.one_of(
    st.binary(max_size=30),
    _json_values.map(lambda x: json.dumps(x).encode()),
    st.builds(
        lambda cid, model, mt, t: json.dumps(
            chat(cid, model=model, max_tokens=mt, temperature=t)
        ).encode(),
        st.sampled_from(["a", "b", "c", "d"]),
        st.sampled_from(["tiny-chat", "auto", "nope"]),
        st.integers(-1, 3),
        st.floats(-1, 3),
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_lines, max_size=12), st.sampled_from([b"\n", b"\r\n"]))
def test_scanning_any_bytes_never_raises_and_accounts_for_every_line(
    lines: list[bytes], eol: bytes
) -> None:
    # Given arbitrary lines (junk, random JSON, and near-valid requests)
    raw = [line.replace(b"\n", b" ").replace(b"\r", b" ") + eol for line in lines]
    # When scanned
    res = scan(raw)
    # Then every line is either a request or an error (or blank), never both, never lost
    errors = {e.line for e in res.errors if e.line is not None}
    requests = set(res.line_no)
    blank = {
        i + 1
        for i, line in enumerate(raw)
        if not line.removeprefix(b"\xef\xbb\xbf" if i == 0 else b"").strip()
    }
    if res.ok:
        assert requests | blank == set(range(1, len(raw) + 1))
    else:
        assert not errors & requests and errors.isdisjoint(blank)
        assert errors | requests | blank == set(range(1, len(raw) + 1)) or any(
            e.line is None for e in res.errors
        )
    # And each request's bytes are exactly its JSON with the reported custom_id
    data = b"".join(raw)
    for cid, off, n in zip(res.custom_ids, res.byte_offset, res.byte_len, strict=True):
        assert json.loads(data[off : off + n])["custom_id"] == cid
