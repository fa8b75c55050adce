"""Pure mappings between OpenAI request/response bodies and what local engines need."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from scheduler.clock import now_s
from scheduler.errors import InvalidInput
from scheduler.intake.bounds import MAX_CHOICES
from workers.engines.base import EngineResult

CHAT_URL = "/v1/chat/completions"
COMPLETIONS_URL = "/v1/completions"
Endpoint = Literal["chat", "completion"]

MAX_STOP_SEQUENCES = 4


@dataclass(frozen=True, slots=True)
class GenerationOptions:
    """Sampling options of one request, validated.

    ``max_tokens`` is None when the request did not set it (the engine fills the rest of the
    context); ``temperature`` 0 means greedy decoding.
    """

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    n: int = 1
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        """True when decoding is deterministic (temperature 0)."""
        return self.temperature == 0.0


@dataclass(frozen=True, slots=True)
class Choice:
    """One generated sequence: its text, why it ended, its real token count, its logprobs."""

    text: str
    finish_reason: str
    completion_tokens: int
    logprobs: Mapping[str, Any] | None = None


def endpoint_of(url: str) -> Endpoint:
    """Return which endpoint ``url`` names.

    Raises:
        InvalidInput: the url is neither ``/v1/chat/completions`` nor ``/v1/completions``.
    """
    path = url.split("?", 1)[0].rstrip("/")
    if path == CHAT_URL:
        return "chat"
    if path == COMPLETIONS_URL:
        return "completion"
    raise InvalidInput(
        f"url {url!r} is not supported by this engine; use {CHAT_URL!r} or {COMPLETIONS_URL!r}"
    )


def _number(body: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"'{key}' must be a number, got {value!r}")
    if not lo <= float(value) <= hi:
        raise InvalidInput(f"'{key}' must be between {lo:g} and {hi:g}, got {value!r}")
    return float(value)


def _integer(body: Mapping[str, Any], key: str, lo: int, hi: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"'{key}' must be a whole number, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise InvalidInput(f"'{key}' must be {bound}, got {value!r}")
    return value


def parse_options(body: Mapping[str, Any], *, max_n: int = MAX_CHOICES) -> GenerationOptions:
    """Validate and extract the sampling options of a chat or completions body.

    ``max_completion_tokens`` wins over ``max_tokens``; ``stop`` may be a string or a list of
    up to four strings; ``stream`` must be absent or false (batch output is never streamed).

    Args:
        body: The request body.
        max_n: Largest ``n`` this engine accepts.

    Raises:
        InvalidInput: an option has the wrong type or is out of range.
    """
    if body.get("stream"):
        raise InvalidInput("'stream' is not supported in batch requests; remove it")
    max_tokens = _integer(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1)
    stop_raw = body.get("stop")
    if stop_raw is None:
        stop: tuple[str, ...] = ()
    elif isinstance(stop_raw, str):
        stop = (stop_raw,)
    elif isinstance(stop_raw, list) and all(isinstance(s, str) and s for s in stop_raw):
        stop = tuple(stop_raw)
    else:
        raise InvalidInput(f"'stop' must be a string or a list of strings, got {stop_raw!r}")
    if len(stop) > MAX_STOP_SEQUENCES or any(not s for s in stop):
        raise InvalidInput(f"'stop' takes 1 to {MAX_STOP_SEQUENCES} non-empty strings")
    n = _integer(body, "n", 1, max_n)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidInput(f"'seed' must be a whole number, got {seed!r}")
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0.0:  # only the most likely token survives: that is greedy decoding
        temperature, top_p = 0.0, 1.0
    return GenerationOptions(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=stop,
        n=1 if n is None else n,
        seed=seed,
    )


def _content_text(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text":
                raise InvalidInput(
                    f"messages[{index}].content: only text parts are supported by this engine"
                )
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise InvalidInput(f"messages[{index}].content must be a string or a list of text parts")


def parse_messages(body: Mapping[str, Any]) -> list[dict[str, str]]:
    """Return the chat messages of ``body`` as ``[{"role", "content"}]`` with text content.

    Raises:
        InvalidInput: ``messages`` is missing, empty, or holds non-text content.
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidInput("'messages' must be a non-empty list of {role, content} objects")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise InvalidInput(f"messages[{i}] must be an object with a string 'role'")
        out.append({"role": message["role"], "content": _content_text(message.get("content"), i)})
    return out


def parse_prompt(body: Mapping[str, Any]) -> str:
    """Return the single text prompt of a completions body.

    Raises:
        InvalidInput: ``prompt`` is missing, not text, or a list of several prompts.
    """
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidInput(
            "'prompt' must be one string (send one prompt per request line), got "
            f"{type(prompt).__name__}"
        )
    return prompt


def apply_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop sequence (which is not included).

    Returns:
        The truncated text and whether a stop sequence was found.
    """
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def response_body(
    endpoint: Endpoint,
    *,
    model: str,
    choices: Sequence[Choice],
    prompt_tokens: int,
    request_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """Build an OpenAI ``chat.completion`` or ``text_completion`` body with ``usage``.

    ``usage.completion_tokens`` sums over all choices, as OpenAI does for ``n`` > 1.
    """
    completion_tokens = sum(c.completion_tokens for c in choices)
    if endpoint == "chat":
        prefix, obj = "chatcmpl", "chat.completion"
        shaped: list[dict[str, Any]] = [
            {
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": c.logprobs,
                "finish_reason": c.finish_reason,
            }
            for i, c in enumerate(choices)
        ]
    else:
        prefix, obj = "cmpl", "text_completion"
        shaped = [
            {"index": i, "text": c.text, "logprobs": c.logprobs, "finish_reason": c.finish_reason}
            for i, c in enumerate(choices)
        ]
    return {
        "id": request_id or f"{prefix}-{uuid.uuid4().hex}",
        "object": obj,
        "created": now_s() if created is None else created,
        "model": model,
        "choices": shaped,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def success_result(custom_id: str, body: Mapping[str, Any]) -> EngineResult:
    """Wrap a 200 response body, taking the token counts from its ``usage``."""
    usage = body.get("usage") or {}
    return EngineResult(
        custom_id=custom_id,
        status_code=200,
        body=body,
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
    )


def error_result(
    custom_id: str,
    message: str,
    *,
    status_code: int = 400,
    code: str = "invalid_request",
    param: str | None = None,
) -> EngineResult:
    """A per-request failure: OpenAI error body plus ``error`` ``{"code", "message"}``."""
    kind = "invalid_request_error" if 400 <= status_code < 500 else "server_error"
    return EngineResult(
        custom_id=custom_id,
        status_code=status_code,
        body={"error": {"message": message, "type": kind, "param": param, "code": code}},
        error={"code": code, "message": message},
    )
