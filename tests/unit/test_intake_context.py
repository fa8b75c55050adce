"""Nothing runs that cannot fit: per-line context refusals at intake, and harmless new fields."""

from __future__ import annotations

import json
from typing import Any

import pytest

from scheduler.engine_options import refused_options
from scheduler.errors import ConfigError
from scheduler.fleet import parse_fleet
from scheduler.intake.bounds import MAX_CHARS_PER_TOKEN
from scheduler.intake.catalog import ModelCatalog
from scheduler.intake.validate import CONTEXT_LENGTH_EXCEEDED, ScanResult, scan_lines
from scheduler.samples import load_sample_fleet

CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
EMB = "/v1/embeddings"
RESP = "/v1/responses"
PROFILE = {"CPU": {"prefill_tok_s": 1, "decode_tok_s": 1, "power_w": 1}}


def fleet_catalog(**contexts: int | None) -> ModelCatalog:
    """A fleet of ``small`` (quality 0.4), ``large`` (0.8) and ``emb`` with the given contexts."""
    models: list[dict[str, Any]] = [
        {"name": "small", "quality": 0.4, "profiles": PROFILE},
        {"name": "large", "quality": 0.8, "profiles": PROFILE},
        {"name": "emb", "kind": "embed", "profiles": PROFILE},
    ]
    for m in models:
        if contexts.get(m["name"]) is not None:
            m["context_tokens"] = contexts[m["name"]]
    raw = {
        "sites": [{"name": "s", "pools": [{"name": "p", "gpu": "CPU", "count": 1}]}],
        "models": models,
        "model_aliases": {"gpt-4o-mini": {"model": "auto", "min_quality": 0.4}},
    }
    return ModelCatalog.of(parse_fleet(raw))


CATALOG = fleet_catalog(small=1024, large=8192, emb=512)


def line(url: str, cid: str = "a", **body: Any) -> bytes:
    return (
        json.dumps({"custom_id": cid, "method": "POST", "url": url, "body": body}).encode() + b"\n"
    )


def chat(cid: str = "a", model: str = "small", text: str = "hi", **extra: Any) -> bytes:
    return line(CHAT, cid, model=model, messages=[{"role": "user", "content": text}], **extra)


def scan(
    lines: list[bytes],
    endpoint: str = CHAT,
    min_quality: float | None = None,
    catalog: ModelCatalog = CATALOG,
) -> ScanResult:
    return scan_lines(
        lines, endpoint=endpoint, models=catalog, min_quality=min_quality, max_requests=100
    )


def errors(res: ScanResult) -> list[tuple[int | None, str, str | None]]:
    return [(e.line, e.code, e.param) for e in res.errors]


def test_a_named_model_refuses_only_the_lines_whose_max_tokens_cannot_fit_its_context() -> None:
    res = scan(
        [
            chat("fits", max_tokens=1000),
            chat("over", max_tokens=1025),
            chat("over-completion", max_completion_tokens=2000),
            chat("large", model="large", max_tokens=8000),
        ]
    )
    assert errors(res) == [
        (2, CONTEXT_LENGTH_EXCEEDED, "body.max_tokens"),
        (3, CONTEXT_LENGTH_EXCEEDED, "body.max_completion_tokens"),
    ]
    message = res.errors[0].message
    assert "1024 tokens, the context of 'small'" in message and "at most 1024" in message


def test_auto_and_its_aliases_fit_when_any_model_meeting_the_floor_has_the_context() -> None:
    big = {"max_tokens": 5000}
    # floor 0.4 admits large (8192): fits; floor 0.4 via the alias: fits
    assert scan([chat(model="auto", **big)], min_quality=0.4).ok
    assert scan([chat(model="gpt-4o-mini", **big)]).ok
    # beyond every admitted model's context: refused, naming the widest one
    res = scan([chat(model="gpt-4o-mini", max_tokens=9000)])
    assert errors(res) == [(1, CONTEXT_LENGTH_EXCEEDED, "body.max_tokens")]
    assert "any model that may serve 'auto'" in res.errors[0].message
    assert "'large'" in res.errors[0].message
    # a floor only the small model meets holds the line to its 1024 tokens
    only_small = fleet_catalog(small=1024, large=None)
    assert scan([chat(model="auto", **big)], min_quality=0.4, catalog=only_small).ok  # unknown
    only_small = fleet_catalog(small=8192, large=1024)
    res = scan([chat(model="auto", max_tokens=2000)], min_quality=0.7, catalog=only_small)
    assert errors(res) == [(1, CONTEXT_LENGTH_EXCEEDED, "body.max_tokens")]


def test_a_prompt_no_context_can_hold_is_refused_whatever_the_tokenizer() -> None:
    # Given a prompt longer than 8192 tokens could be at MAX_CHARS_PER_TOKEN characters each,
    # beside lines that fit
    huge = "x" * (8192 * MAX_CHARS_PER_TOKEN + MAX_CHARS_PER_TOKEN)
    res = scan([chat("ok"), chat("huge", model="large", text=huge), chat("ok2")])
    # Then only that line is refused, on its prompt, and the others are kept
    assert errors(res) == [(2, CONTEXT_LENGTH_EXCEEDED, "body.messages")]
    assert "does not fit model 'large'" in res.errors[0].message
    assert res.custom_ids == ["ok", "ok2"]
    # and a prompt that may fit (its lower bound is below the context) is not refused here
    assert scan([chat(model="large", text="x" * (8000 * MAX_CHARS_PER_TOKEN))]).ok


def test_a_fleet_without_context_tokens_refuses_nothing_for_length() -> None:
    unknown = fleet_catalog()
    assert scan([chat(max_tokens=1 << 20)], catalog=unknown).ok


@pytest.mark.parametrize(
    ("endpoint", "fits", "over", "param"),
    [
        (
            COMP,
            {"prompt": "hi", "max_tokens": 1000},
            {"prompt": "hi", "max_tokens": 1100},
            "max_tokens",
        ),
        (
            COMP,
            {"prompt": [1] * 100, "max_tokens": 10},
            {"prompt": "y" * (1024 * MAX_CHARS_PER_TOKEN)},
            "prompt",
        ),
        (
            RESP,
            {"input": "hi", "max_output_tokens": 1000},
            {"input": "hi", "max_output_tokens": 1100},
            "max_output_tokens",
        ),
        (
            RESP,
            {"input": "hi", "instructions": "be brief"},
            {"input": "hi", "instructions": "z" * (1024 * MAX_CHARS_PER_TOKEN)},
            "input",
        ),
    ],
)
def test_every_generation_endpoint_holds_its_lines_to_the_context(
    endpoint: str, fits: dict[str, Any], over: dict[str, Any], param: str
) -> None:
    res = scan(
        [line(endpoint, "a", model="small", **fits), line(endpoint, "b", model="small", **over)],
        endpoint,
    )
    assert errors(res) == [(2, CONTEXT_LENGTH_EXCEEDED, f"body.{param}")]


def test_embeddings_hold_each_input_not_their_sum_to_the_context() -> None:
    # 600 inputs of 300 characters: 180,000 characters in all, each input a few tokens
    many = line(EMB, "many", model="emb", input=["w" * 300] * 600)
    one = line(EMB, "one", model="emb", input=["short", "v" * (513 * MAX_CHARS_PER_TOKEN)])
    res = scan([many, one], EMB)
    assert errors(res) == [(2, CONTEXT_LENGTH_EXCEEDED, "body.input")]
    assert res.custom_ids == ["many"]


def test_the_sample_fleet_serves_a_hosted_file_with_max_tokens_1000() -> None:
    # the README's hosted file: gpt-4o-mini with max_tokens 1000 (a 256-token context refused it
    # only at run time, after the batch had waited for its slot)
    sample = ModelCatalog.of(load_sample_fleet())
    text = "Summarise in one sentence: the grid is cleaner at night. " * 4
    lines = [chat(f"r{i}", model="gpt-4o-mini", text=text, max_tokens=1000) for i in range(15)]
    assert scan(lines, catalog=sample).ok
    assert set(sample.contexts.values()) == {4096}
    res = scan([chat(model="gpt-4o-mini", max_tokens=5000)], catalog=sample)
    assert errors(res) == [(1, CONTEXT_LENGTH_EXCEEDED, "body.max_tokens")]


@pytest.mark.parametrize("bad", [0, 15, 4096.0, "4096", True])
def test_context_tokens_in_the_fleet_must_be_a_whole_number(bad: object) -> None:
    raw = {
        "sites": [{"name": "s", "pools": [{"name": "p", "gpu": "CPU", "count": 1}]}],
        "models": [{"name": "m", "context_tokens": bad, "profiles": PROFILE}],
    }
    with pytest.raises(ConfigError, match="context_tokens must be a whole number"):
        parse_fleet(raw)


HARMLESS = {
    "safety_identifier": "user-7f3a",
    "prompt_cache_key": "summaries-v2",
    "service_tier": "flex",
}


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        (CHAT, {"messages": [{"role": "user", "content": "hi"}]}),
        (COMP, {"prompt": "hi"}),
        (RESP, {"input": "hi"}),
        (EMB, {"input": "hi"}),
    ],
)
def test_caller_ids_service_tier_and_prompt_cache_key_are_accepted_on_every_endpoint(
    endpoint: str, body: dict[str, Any]
) -> None:
    model = "emb" if endpoint == EMB else "small"
    for key, value in HARMLESS.items():
        res = scan([line(endpoint, model=model, **body, **{key: value})], endpoint)
        assert res.ok, (key, res.errors)
    # the engines that check options (vllm, transformers) do not refuse them either
    assert refused_options(HARMLESS, "transformers") == refused_options(HARMLESS, "vllm") == []


def test_each_part_keeps_the_context_its_largest_line_needs() -> None:
    from scheduler.intake.submit import part_rows
    from scheduler.store.tables import Batch

    sample = load_sample_fleet()
    lines = [
        chat("a", model="tiny-chat", max_tokens=100),
        chat("b", model="tiny-chat", text="x" * (10 * MAX_CHARS_PER_TOKEN), max_tokens=2000),
        chat("c", model="gpt-4o-mini"),
    ]
    res = scan(lines, catalog=ModelCatalog.of(sample))
    rows = part_rows(Batch(id="batch_1", endpoint=CHAT), res, sample, 256)
    need = {r["id"]: r["max_request_tokens"] for r in rows}
    # b: at least 10 prompt tokens + 2000; c: no max_tokens, so its prompt + 1
    assert need == {"batch_1~tiny-chat": 2010, "batch_1~auto@0.4": 1}


def test_a_50_mb_single_line_prompt_is_refused_at_intake_on_the_sample_fleet() -> None:
    # issue 22 item 7: no model of the sample fleet (4,096 tokens) can hold 50 MB of prompt
    sample = ModelCatalog.of(load_sample_fleet())
    huge = chat("huge", model="gpt-4o-mini", text="a" * (50 << 20))
    res = scan([chat("before", model="gpt-4o-mini"), huge], catalog=sample)
    assert errors(res) == [(2, CONTEXT_LENGTH_EXCEEDED, "body.messages")]
    assert "52428800 characters" in res.errors[0].message
    assert len(res.errors[0].message) < 400  # the error names sizes, never echoes the prompt
