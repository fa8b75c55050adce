"""Absurd numbers are line errors on every endpoint, never an overflow (500) or a dead batch."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from scheduler.intake.bounds import MAX_OUTPUT_TOKENS
from scheduler.intake.catalog import ModelCatalog
from scheduler.intake.validate import scan_lines
from scheduler.samples import load_sample_fleet

CATALOG = ModelCatalog.of(load_sample_fleet())
HUGE = [2**31, 2**53, 2**63, 10**30]


def _line(url: str, cid: str, **body: Any) -> bytes:
    return json.dumps({"custom_id": cid, "method": "POST", "url": url, "body": body}).encode()


@pytest.mark.parametrize(
    ("endpoint", "model", "key", "extra"),
    [
        ("/v1/chat/completions", "tiny-chat", "max_tokens", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/chat/completions", "tiny-chat", "max_completion_tokens", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/completions", "tiny-chat", "max_tokens", {"prompt": "hi"}),
        ("/v1/responses", "tiny-chat", "max_output_tokens", {"input": "hi"}),
        ("/v1/embeddings", "tiny-embed", "dimensions", {"input": "hi"}),
    ],
)  # fmt: skip
def test_numbers_beyond_any_model_are_line_errors(
    endpoint: str, model: str, key: str, extra: dict[str, Any]
) -> None:
    lines = [_line(endpoint, f"n{i}", model=model, **extra, **{key: n}) for i, n in enumerate(HUGE)]
    ok = _line(endpoint, "ok", model=model, **extra)
    res = scan_lines(
        [ok, *lines], endpoint=endpoint, models=CATALOG, min_quality=None, max_requests=100
    )
    # Then every huge number is an error of its own line, naming the parameter; the good line stays
    got = {e.line: e.param for e in res.errors}
    assert sorted(got) == [2, 3, 4, 5], res.errors
    assert all(p == f"body.{key}" for p in got.values()), got
    assert all("at most" in e.message for e in res.errors), res.errors


def test_the_bound_itself_is_accepted() -> None:
    # on models that state no context_tokens, only the global bound applies
    unbounded = dataclasses.replace(CATALOG, contexts={})
    line = _line(
        "/v1/chat/completions",
        "max",
        model="tiny-chat",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=MAX_OUTPUT_TOKENS,
    )
    res = scan_lines(
        [line], endpoint="/v1/chat/completions", models=unbounded, min_quality=None, max_requests=10
    )
    assert res.error_count == 0, res.errors


def test_a_models_own_output_limit_from_the_fleet_is_enforced() -> None:
    from dataclasses import replace

    # Given a fleet whose tiny-chat declares max_output_tokens: 64
    fleet = load_sample_fleet()
    models = tuple(
        replace(m, extra={**m.extra, "max_output_tokens": 64}) if m.name == "tiny-chat" else m
        for m in fleet.models
    )
    catalog = ModelCatalog.of(replace(fleet, models=models))
    assert catalog.output_limits == {"tiny-chat": 64}
    chat = [{"role": "user", "content": "hi"}]
    lines = [
        _line("/v1/chat/completions", "ok", model="tiny-chat", messages=chat, max_tokens=64),
        _line("/v1/chat/completions", "big", model="tiny-chat", messages=chat, max_tokens=65),
        _line(
            "/v1/chat/completions", "new", model="tiny-chat", messages=chat,
            max_completion_tokens=500,
        ),
    ]  # fmt: skip
    res = scan_lines(
        lines, endpoint="/v1/chat/completions", models=catalog, min_quality=None, max_requests=10
    )
    # Then the lines over the model's limit are errors naming the parameter and the limit
    assert {e.line: e.param for e in res.errors} == {
        2: "body.max_tokens",
        3: "body.max_completion_tokens",
    }
    assert all("at most 64" in e.message for e in res.errors)
