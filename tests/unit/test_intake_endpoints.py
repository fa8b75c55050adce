"""Embeddings and responses lines, model kinds, aliases and ``auto`` floors at intake."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from scheduler.domain import PlanningBatch
from scheduler.errors import ConfigError
from scheduler.fleet import parse_fleet
from scheduler.intake.catalog import ModelCatalog
from scheduler.intake.validate import scan_lines
from scheduler.optimizer.aggregate import allowed_models
from scheduler.optimizer.problem import PlanningProblem
from scheduler.samples import load_sample_fleet

EMB = "/v1/embeddings"
RESP = "/v1/responses"
CHAT = "/v1/chat/completions"
SAMPLE = load_sample_fleet()
SAMPLE_T0 = datetime(2026, 11, 22, tzinfo=UTC)
SAMPLE_T1 = datetime(2026, 11, 23, tzinfo=UTC)
CATALOG = ModelCatalog.of(SAMPLE)


def line(url: str, cid: str = "a", **body: Any) -> bytes:
    return (
        json.dumps({"custom_id": cid, "method": "POST", "url": url, "body": body}).encode() + b"\n"
    )


def scan(lines: list[bytes], endpoint: str, min_quality: float | None = None, catalog=CATALOG):
    return scan_lines(
        lines, endpoint=endpoint, models=catalog, min_quality=min_quality, max_requests=100
    )


def only_error(res) -> tuple[str, str | None, str]:
    assert res.error_count == 1, res.errors
    e = res.errors[0]
    return e.code, e.param, e.message


def test_sample_fleet_maps_the_common_hosted_names() -> None:
    names = {
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4.1-mini",
        "gpt-4.1",
        "text-embedding-3-small",
        "text-embedding-3-large",
    }
    assert names <= set(SAMPLE.model_aliases)
    assert SAMPLE.model_aliases["text-embedding-3-small"].model == "tiny-embed"
    assert SAMPLE.model("tiny-embed").embeds and not SAMPLE.model("tiny-chat").embeds
    assert SAMPLE.default_min_quality is not None


@pytest.mark.parametrize(
    "body",
    [
        {"input": "the grid is clean at night"},
        {"input": ["one", "two", "three"], "encoding_format": "base64"},
        {"input": [1, 2, 3]},
        {"input": [[1, 2], [3]], "encoding_format": "float", "user": "u1"},
    ],
)
def test_embeddings_lines_in_every_openai_input_form_are_accepted(body: dict[str, Any]) -> None:
    res = scan([line(EMB, model="text-embedding-3-small", **body)], EMB)
    assert res.ok, res.errors
    assert res.models == ["tiny-embed"] and res.requested == ["text-embedding-3-small"]
    assert res.max_tokens.tolist() == [0]


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"input": ""}, "invalid_type", "body.input"),
        ({"input": []}, "invalid_type", "body.input"),
        ({"input": ["a", 3]}, "invalid_type", "body.input"),
        ({"input": ["x"] * 2049}, "invalid_type", "body.input"),
        ({}, "missing_required_parameter", "body.input"),
        ({"input": "x", "encoding_format": "int8"}, "invalid_value", "body.encoding_format"),
        ({"input": "x", "dimensions": 0}, "invalid_value", "body.dimensions"),
        ({"input": "x", "dimensions": 64}, "invalid_value", "body.dimensions"),
        ({"input": "x", "truncate": True}, "unsupported_parameter", "body.truncate"),
    ],
)
def test_bad_embeddings_lines_are_refused_naming_the_field(
    body: dict[str, Any], code: str, param: str
) -> None:
    res = scan([line(EMB, model="tiny-embed", **body)], EMB)
    got_code, got_param, message = only_error(res)
    assert (got_code, got_param) == (code, param), message


def test_dimensions_are_accepted_where_the_fleet_says_the_model_supports_them() -> None:
    raw = {
        "sites": [{"name": "s", "pools": [{"name": "p", "gpu": "CPU", "count": 1}]}],
        "models": [
            {
                "name": "mat-embed",
                "kind": "embed",
                "supports_dimensions": True,
                "profiles": {"CPU": {"prefill_tok_s": 1, "decode_tok_s": 1, "power_w": 1}},
            }
        ],
    }
    catalog = ModelCatalog.of(parse_fleet(raw))
    assert scan([line(EMB, model="mat-embed", input="x", dimensions=8)], EMB, catalog=catalog).ok


@pytest.mark.parametrize(
    ("url", "model", "message"),
    [
        (EMB, "tiny-chat", "generation model and cannot serve /v1/embeddings"),
        (EMB, "auto", "must name an embedding model"),
        (EMB, "gpt-4o-mini", "must name an embedding model"),
        (CHAT, "tiny-embed", "embedding model and cannot serve /v1/chat/completions"),
        (CHAT, "text-embedding-3-small", "embedding model and cannot serve"),
        (CHAT, "gpt-5-turbo-max", "not in the fleet"),
    ],
)
def test_a_model_of_the_wrong_kind_is_model_not_found_with_the_usable_names(
    url: str, model: str, message: str
) -> None:
    body = {"input": "x"} if url == EMB else {"messages": [{"role": "user", "content": "hi"}]}
    code, param, got = only_error(scan([line(url, model=model, **body)], url))
    assert (code, param) == ("model_not_found", "body.model")
    assert message in got
    assert "tiny-chat" in got or "tiny-embed" in got  # the message lists what to use


def chat_line(cid: str, model: str) -> bytes:
    return line(CHAT, cid, model=model, messages=[{"role": "user", "content": "hello"}])


def test_aliases_to_auto_become_parts_with_the_alias_floor_unless_the_batch_sets_one() -> None:
    lines = [chat_line("a", "gpt-4o-mini"), chat_line("b", "gpt-4o"), chat_line("c", "tiny-chat")]
    res = scan(lines, CHAT)
    assert res.ok, res.errors
    assert res.models == ["auto@0.4", "auto@0.6", "tiny-chat"]
    assert res.floors == {"auto@0.4": 0.4, "auto@0.6": 0.6}
    # The batch's own min_quality wins over the aliases' floors: one auto part
    res = scan(lines, CHAT, min_quality=0.5)
    assert res.models == ["auto", "tiny-chat"] and res.floors == {"auto": 0.5}


def test_auto_without_any_floor_is_refused_and_the_fleet_default_fills_in() -> None:
    bare = ModelCatalog(generate=frozenset({"tiny-chat"}))
    code, _, message = only_error(scan([chat_line("a", "auto")], CHAT, catalog=bare))
    assert code == "min_quality_required" and "defaults.min_quality" in message
    res = scan([chat_line("a", "auto")], CHAT)  # the sample fleet has defaults.min_quality
    assert res.floors == {f"auto@{SAMPLE.default_min_quality:g}": SAMPLE.default_min_quality}


@pytest.mark.parametrize(
    "body",
    [
        {"input": "Summarise: the grid is clean at night."},
        {
            "input": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "input_text", "text": "Hello"}]},
            ],
            "instructions": "Answer in French.",
            "max_output_tokens": 16,
            "temperature": 0,
            "text": {
                "format": {
                    "type": "json_schema",
                    "name": "answer",
                    "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
                }
            },
        },
    ],
)
def test_responses_lines_are_accepted(body: dict[str, Any]) -> None:
    res = scan([line(RESP, model="gpt-4o-mini", **body)], RESP)
    assert res.ok, res.errors
    assert res.max_tokens.tolist() == [body.get("max_output_tokens", 0)]


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({}, "missing_required_parameter", "body.input"),
        ({"input": 3}, "invalid_type", "body.input"),
        ({"input": [{"type": "function_call_output"}]}, "invalid_value", "body.input[0]"),
        ({"input": [{"role": "wizard", "content": "x"}]}, "invalid_value", "body.input[0].role"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "unsupported_parameter", "body.tools"),
        ({"input": "x", "previous_response_id": "r"}, "unsupported_parameter", None),
        ({"input": "x", "max_output_tokens": 0}, "invalid_value", "body.max_output_tokens"),
        ({"input": "x", "temperature": 3}, "invalid_value", "body.temperature"),
        ({"input": "x", "stream": True}, "invalid_value", "body.stream"),
        ({"input": "x", "text": {"format": {"type": "xml"}}}, "invalid_value", "body.text.format"),
        (
            {"input": "x", "text": {"format": {"type": "json_schema"}}},
            "invalid_value",
            "body.text.format",
        ),
    ],
)
def test_responses_options_no_engine_honours_are_refused_per_line(
    body: dict[str, Any], code: str, param: str | None
) -> None:
    got_code, got_param, message = only_error(scan([line(RESP, model="tiny-chat", **body)], RESP))
    assert got_code == code, message
    assert got_param == (param or "body.previous_response_id")


def test_auto_planning_never_picks_an_embedding_model() -> None:
    batch = PlanningBatch(
        id="b",
        model=None,
        min_quality=0.0,
        requests=1,
        input_tokens=10,
        output_tokens=10,
        submitted_at=SAMPLE_T0,
        deadline=SAMPLE_T1,
    )
    problem = PlanningProblem(fleet=SAMPLE, slots=(), signals={}, batches=(batch,))
    chosen = {SAMPLE.models[i].name for i in allowed_models(problem, batch)}
    assert chosen == {"tiny-chat", "tiny-chat-mini"}


def test_fleet_refuses_an_alias_to_an_unknown_model_or_shadowing_a_model() -> None:
    base = {
        "sites": [{"name": "s", "pools": [{"name": "p", "gpu": "CPU", "count": 1}]}],
        "models": [
            {
                "name": "m",
                "profiles": {"CPU": {"prefill_tok_s": 1, "decode_tok_s": 1, "power_w": 1}},
            }
        ],
    }
    with pytest.raises(ConfigError, match="must be 'auto' or one of"):
        parse_fleet({**base, "model_aliases": {"gpt-4o": "nope"}})
    with pytest.raises(ConfigError, match="not a fleet model's name"):
        parse_fleet({**base, "model_aliases": {"m": "auto"}})
    with pytest.raises(ConfigError, match="applies only to model 'auto'"):
        parse_fleet({**base, "model_aliases": {"x": {"model": "m", "min_quality": 0.1}}})
    with pytest.raises(ConfigError, match="kind must be one of"):
        parse_fleet({**base, "models": [{**base["models"][0], "kind": "rerank"}]})


def test_a_json_text_format_is_refused_at_intake_where_no_engine_constrains_output() -> None:
    from scheduler.engine_options import OptionCheck, engine_kinds_by_model

    fmt = {"type": "json_schema", "name": "a", "schema": {"type": "object"}}
    body = {"input": "x", "text": {"format": fmt}}
    sample_pools = OptionCheck(engine_kinds_by_model(SAMPLE))  # transformers pools only
    res = scan_lines(
        [line(RESP, model="gpt-4o-mini", **body), line(RESP, "b", model="tiny-chat", input="y")],
        endpoint=RESP,
        models=CATALOG,
        min_quality=None,
        max_requests=10,
        options=sample_pools,
    )
    code, param, message = only_error(res)
    assert (code, param) == ("unsupported_option", "body.text.format")
    assert "(transformers)" in message and "text.format" in message
    vllm_pools = OptionCheck({m: {"vllm"} for m in ("tiny-chat", "tiny-chat-mini", "auto")})
    ok = scan_lines(
        [line(RESP, model="gpt-4o-mini", **body)],
        endpoint=RESP,
        models=CATALOG,
        min_quality=None,
        max_requests=10,
        options=vllm_pools,
    )
    assert ok.ok, ok.errors
