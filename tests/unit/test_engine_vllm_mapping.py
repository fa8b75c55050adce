"""The vLLM adapter's pure mappings (vLLM cannot run here: its outputs are stand-in dataclasses)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from scheduler.errors import EngineError, InvalidInput
from workers.engines import EngineConfig, EngineResult, build_engine
from workers.engines.openai_shapes import error_result, parse_options
from workers.engines.vllm import VLLMEngine, choices_of, result_of, run_isolated, sampling_kwargs


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
    kwargs = sampling_kwargs(options, default_max_tokens=1024)
    # Then SamplingParams gets the same values (max_completion_tokens wins)
    assert kwargs == {
        "n": 3,
        "max_tokens": 64,
        "temperature": 0.7,
        "top_p": 0.9,
        "stop": ["\n\n"],
        "seed": 42,
    }


def test_missing_max_tokens_uses_the_engine_default_and_temperature_zero_is_greedy() -> None:
    kwargs = sampling_kwargs(parse_options({"temperature": 0}), default_max_tokens=77)
    assert kwargs["max_tokens"] == 77 and kwargs["temperature"] == 0.0
    assert "seed" not in kwargs and kwargs["stop"] is None


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


def test_a_rejected_request_is_isolated_from_its_batch() -> None:
    # Given a batch call that rejects the whole batch when any prompt is too long
    calls: list[list[str]] = []

    def call(items: Sequence[str]) -> list[EngineResult]:
        calls.append(list(items))
        if any(len(p) > 10 for p in items):
            raise ValueError("prompt longer than max_model_len")
        return [EngineResult(p, 200) for p in items]

    # When five prompts with one long one run
    results = run_isolated(
        ["a", "b", "x" * 20, "c", "d"], call, lambda p, e: error_result(p, str(e))
    )
    # Then only the long one failed, with vLLM's message, and order is kept
    assert [r.status_code for r in results] == [200, 200, 400, 200, 200]
    assert results[2].error is not None and "max_model_len" in results[2].error["message"]
    assert len(calls) < 2 * 5  # halving, not one call per prompt for everything


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_loading_without_vllm_says_how_to_install_it() -> None:
    engine = build_engine(EngineConfig(kind="vllm", options={"gpu_memory_utilization": 0.85}))
    assert isinstance(engine, VLLMEngine)
    with pytest.raises(EngineError, match=r"pip install 'gridshift\[gpu\]'"):
        engine.load("llama", "/models/llama")


def test_unknown_vllm_option_and_unknown_kind_are_errors() -> None:
    with pytest.raises(EngineError, match="gpu_memory_utilization"):
        build_engine(EngineConfig(kind="vllm", options={"gpu_mem": 0.9}))
    with pytest.raises(EngineError, match="unknown engine kind"):
        build_engine(EngineConfig(kind="tgi"))
