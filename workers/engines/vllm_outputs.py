"""vLLM request outputs -> OpenAI choices and bodies (pure: no vLLM import)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from workers.engines.base import EngineResult
from workers.engines.openai_shapes import Choice, Endpoint, response_body, success_result
from workers.engines.vllm_params import chat_logprobs, completion_logprobs


class CompletionOutputLike(Protocol):
    """The fields of ``vllm.outputs.CompletionOutput`` this engine reads."""

    @property
    def index(self) -> int:
        """Position of this choice."""

    @property
    def text(self) -> str:
        """Generated text (stop string excluded)."""

    @property
    def token_ids(self) -> Sequence[int]:
        """Generated token ids."""

    @property
    def finish_reason(self) -> str | None:
        """``stop``, ``length`` or None."""

    @property
    def logprobs(self) -> Any:
        """Per generated token: token id -> Logprob, or None when not asked for."""


class RequestOutputLike(Protocol):
    """The fields of ``vllm.outputs.RequestOutput`` this engine reads."""

    @property
    def prompt_token_ids(self) -> Sequence[int] | None:
        """Token ids of the (templated) prompt."""

    @property
    def outputs(self) -> Sequence[CompletionOutputLike]:
        """One output per choice."""


def choices_of(
    output: RequestOutputLike,
    *,
    endpoint: Endpoint = "chat",
    top_logprobs: int | None = None,
    decode: Callable[[list[int]], str] = lambda ids: "",
) -> tuple[int, list[Choice]]:
    """Return the prompt token count and the choices (by index) of one vLLM request output."""
    prompt_tokens = len(output.prompt_token_ids or ())
    shape = chat_logprobs if endpoint == "chat" else completion_logprobs
    choices = [
        Choice(
            text=o.text,
            finish_reason=o.finish_reason or "stop",
            completion_tokens=len(o.token_ids),
            logprobs=(
                shape(list(o.token_ids), list(o.logprobs), top_logprobs, decode)
                if top_logprobs is not None and o.logprobs is not None
                else None
            ),
        )
        for o in sorted(output.outputs, key=lambda o: o.index)
    ]
    return prompt_tokens, choices


def result_of(
    custom_id: str,
    endpoint: Endpoint,
    output: RequestOutputLike,
    *,
    model: str,
    top_logprobs: int | None = None,
    decode: Callable[[list[int]], str] = lambda ids: "",
) -> EngineResult:
    """Turn one vLLM request output into a 200 result with an OpenAI body and real counts."""
    prompt_tokens, choices = choices_of(
        output, endpoint=endpoint, top_logprobs=top_logprobs, decode=decode
    )
    body = response_body(endpoint, model=model, choices=choices, prompt_tokens=prompt_tokens)
    return success_result(custom_id, body)
