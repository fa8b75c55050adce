"""The vLLM adapter's pure mappings on stand-in outputs (tests/integration/test_vllm_real.py runs vLLM)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import pytest

from scheduler.errors import EngineError, InvalidInput
from workers.engines import EngineConfig, build_engine
from workers.engines.openai_shapes import parse_options
from workers.engines.vllm import VLLMEngine, choices_of, result_of
from workers.engines.vllm_params import sampling_kwargs


@dataclass
class FakeCompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None


@dataclass
class FakeRequestOutput:
    prompt_token_ids: list[int] | None
    outputs: list[FakeCompletionOutput] = field(default_factory=list)


def test_request_options_map_to_sampling_params() -> None:
    # Given a body with every supported option
    options = parse_options(
        {
            "max_completion_tokens": 64,
            "max_tokens": 9,
            "temperature": 0.7,
            "top_p": 0.9,
            "stop": "\n\n",
            "n": 3,
            "seed": 42,
        }
    )
    # When mapped
    kwargs = sampling_kwargs({}, "chat", max_tokens=64, vocab_size=100, options=options)
    # Then SamplingParams gets the same values
    assert kwargs == {
        "n": 3,
        "max_tokens": 64,
        "temperature": 0.7,
        "top_p": 0.9,
        "stop": ["\n\n"],
        "seed": 42,
    }


def test_temperature_zero_is_greedy_and_unset_options_stay_unset() -> None:
    kwargs = sampling_kwargs({"temperature": 0}, "chat", max_tokens=77, vocab_size=100)
    assert kwargs["max_tokens"] == 77 and kwargs["temperature"] == 0.0
    assert "seed" not in kwargs and kwargs["stop"] is None and "logprobs" not in kwargs


def test_every_vllm_option_is_mapped() -> None:
    body = {
        "presence_penalty": 0.5,
        "frequency_penalty": -0.25,
        "logit_bias": {"7": -100, "9": 2.5},
        "logprobs": True,
        "top_logprobs": 3,
        "top_k": 20,
        "min_p": 0.1,
        "repetition_penalty": 1.1,
        "min_tokens": 2,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "label", "schema": {"type": "string", "enum": ["a", "b"]}},
        },
    }
    kwargs = sampling_kwargs(body, "chat", max_tokens=16, vocab_size=100)
    assert kwargs["presence_penalty"] == 0.5 and kwargs["frequency_penalty"] == -0.25
    assert kwargs["logit_bias"] == {7: -100.0, 9: 2.5}
    assert kwargs["logprobs"] == 3 and kwargs["top_k"] == 20 and kwargs["min_p"] == 0.1
    assert kwargs["repetition_penalty"] == 1.1 and kwargs["min_tokens"] == 2
    assert kwargs["structured_outputs"] == {"json": {"type": "string", "enum": ["a", "b"]}}
    json_object = sampling_kwargs(
        {"response_format": {"type": "json_object"}, "logprobs": 2},
        "completion",
        max_tokens=4,
        vocab_size=100,
    )
    assert json_object["structured_outputs"] == {"json_object": True}
    assert json_object["logprobs"] == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"logit_bias": {"500": 1}}, "outside this model's vocabulary"),
        ({"logit_bias": {"x": 1}}, "not a token id"),
        ({"top_logprobs": 2}, "needs 'logprobs': true"),
        ({"logprobs": True, "top_logprobs": 21}, "between 0 and 20"),
        ({"response_format": {"type": "json_schema"}}, "needs"),
        ({"response_format": {"type": "yaml"}}, "must be 'text'"),
        ({"presence_penalty": 3}, "between -2 and 2"),
    ],
)
def test_bad_vllm_options_are_refused_with_what_to_change(
    body: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        sampling_kwargs(body, "chat", max_tokens=4, vocab_size=100)


def test_options_an_engine_cannot_honour_are_named_with_the_engines_that_can() -> None:
    from scheduler.engine_options import refusal_message, refused_options

    body = {"messages": [], "logprobs": True, "presence_penalty": 0, "tools": [{"x": 1}]}
    assert refused_options(body, "transformers") == ["logprobs", "tools"]
    assert refused_options(body, "vllm") == ["tools"]
    assert refused_options(body, "openai") == []  # the server decides
    message = refusal_message(["logprobs"], "transformers", {"logprobs": True})
    assert "'logprobs'" in message and "vllm or openai" in message


def test_top_p_zero_means_greedy() -> None:
    options = parse_options({"top_p": 0, "temperature": 1.3})
    assert options.greedy and options.top_p == 1.0


@pytest.mark.parametrize(
    "body",
    [
        {"n": 0},
        {"temperature": "hot"},
        {"stop": ["a", "b", "c", "d", "e"]},
        {"stream": True},
        {"seed": 1.5},
        {"max_tokens": 0},
    ],
)
def test_invalid_options_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        parse_options(body)


def test_request_output_becomes_an_openai_body_with_real_counts() -> None:
    # Given a vLLM output with two choices delivered out of order
    out = FakeRequestOutput(
        prompt_token_ids=[1, 5, 9, 12],
        outputs=[
            FakeCompletionOutput(1, "second", [7, 8, 2], "stop"),
            FakeCompletionOutput(0, "first", [3, 4, 5, 6, 7], "length"),
        ],
    )
    # When mapped for the chat endpoint
    result = result_of("req-1", "chat", out, model="llama")
    # Then choices are in index order and usage counts the token ids
    assert result.status_code == 200 and result.body is not None
    body = result.body
    assert body["object"] == "chat.completion" and body["model"] == "llama"
    assert [c["message"]["content"] for c in body["choices"]] == ["first", "second"]
    assert [c["finish_reason"] for c in body["choices"]] == ["length", "stop"]
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 8, "total_tokens": 12}
    assert (result.input_tokens, result.output_tokens) == (4, 8)


def test_completion_output_becomes_a_text_completion() -> None:
    out = FakeRequestOutput([1, 2], [FakeCompletionOutput(0, "abc", [4], None)])
    prompt_tokens, choices = choices_of(out)
    assert prompt_tokens == 2 and choices[0].finish_reason == "stop"
    body = result_of("r", "completion", out, model="m").body
    assert body is not None and body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "abc"


def test_loading_without_vllm_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now fails as if absent
    engine = build_engine(EngineConfig(kind="vllm", options={"gpu_memory_utilization": 0.85}))
    assert isinstance(engine, VLLMEngine)
    with pytest.raises(EngineError, match=r"pip install 'gridshift\[gpu\]'"):
        engine.load("llama", "/models/llama")


def test_unknown_vllm_option_and_unknown_kind_are_errors() -> None:
    with pytest.raises(EngineError, match="gpu_memory_utilization"):
        build_engine(EngineConfig(kind="vllm", options={"gpu_mem": 0.9}))
    with pytest.raises(EngineError, match="unknown engine kind"):
        build_engine(EngineConfig(kind="tgi"))


def test_swap_space_is_refused_as_removed_from_vllm() -> None:
    with pytest.raises(EngineError, match="removed 'swap_space'"):
        build_engine(EngineConfig(kind="vllm", options={"swap_space": 4}))
