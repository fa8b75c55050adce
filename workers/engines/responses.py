"""``/v1/responses`` on the chat path: a request becomes a chat request for the engine, and the
chat answer becomes OpenAI's ``Response`` object (``output[{type: message, content:
[{type: output_text, text}]}]``, ``usage{input_tokens, output_tokens, total_tokens}``, ``status``).

``ResponsesAdapter`` wraps any engine; chat, completions and embeddings pass through untouched.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from scheduler.clock import now_s
from scheduler.errors import InvalidInput
from workers.engines.base import EngineRequest, EngineResult, InferenceEngine
from workers.engines.openai_shapes import CHAT_URL, error_result

RESPONSES_URL = "/v1/responses"
# Engines that decode freely and cannot constrain output to JSON: a json format is refused per
# line there rather than silently ignored.
_UNCONSTRAINED = frozenset({"transformers"})


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(str(p.get("text", "")) for p in content or () if isinstance(p, Mapping))


def chat_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """The chat completions body that runs a responses body.

    ``instructions`` becomes a leading system message, ``developer`` messages become
    ``system``, ``max_output_tokens`` becomes ``max_tokens`` and ``text.format`` becomes
    ``response_format``.
    """
    messages: list[dict[str, str]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": str(body["instructions"])})
    raw = body.get("input")
    if isinstance(raw, str):
        messages.append({"role": "user", "content": raw})
    else:
        for item in raw or ():
            role = item.get("role", "user")
            messages.append(
                {
                    "role": "system" if role == "developer" else role,
                    "content": _text(item.get("content")),
                }
            )
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            chat[key] = body[key]
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif fmt.get("type") == "json_schema":
        chat["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": fmt.get("name"),
                "schema": fmt.get("schema"),
                "strict": bool(fmt.get("strict", False)),
            },
        }
    return chat


def response_object(
    request_body: Mapping[str, Any], chat: Mapping[str, Any], *, created_at: int | None = None
) -> dict[str, Any]:
    """OpenAI's ``Response`` object from a chat completion answering ``request_body``."""
    choice = (chat.get("choices") or [{}])[0]
    text = str((choice.get("message") or {}).get("content") or "")
    truncated = choice.get("finish_reason") == "length"
    usage = chat.get("usage") or {}
    tokens_in = int(usage.get("prompt_tokens") or 0)
    tokens_out = int(usage.get("completion_tokens") or 0)
    status = "incomplete" if truncated else "completed"
    return {
        "id": f"resp_{uuid.uuid4().hex}",
        "object": "response",
        "created_at": now_s() if created_at is None else created_at,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "instructions": request_body.get("instructions"),
        "max_output_tokens": request_body.get("max_output_tokens"),
        "model": chat.get("model"),
        "output": [
            {
                "type": "message",
                "id": f"msg_{uuid.uuid4().hex}",
                "status": status,
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "temperature": request_body.get("temperature", 1.0),
        "top_p": request_body.get("top_p", 1.0),
        "text": request_body.get("text") or {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "truncation": "disabled",
        "metadata": request_body.get("metadata") or {},
        "usage": {
            "input_tokens": tokens_in,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": tokens_out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": tokens_in + tokens_out,
        },
    }


class ResponsesAdapter:
    """Runs ``/v1/responses`` requests of any engine through its chat path."""

    def __init__(self, engine: InferenceEngine) -> None:
        """Wrap ``engine`` (loading, closing and other endpoints are delegated)."""
        self.inner = engine
        self.kind = engine.kind

    def __getattr__(self, name: str) -> Any:
        """Everything else (``model_name``, options, counters) is the wrapped engine's."""
        return getattr(self.inner, name)

    def load(self, model: str, weights: str | None) -> None:
        """Load ``model`` in the wrapped engine."""
        self.inner.load(model, weights)

    def close(self) -> None:
        """Close the wrapped engine."""
        self.inner.close()

    def run(self, requests: Sequence[EngineRequest], **kwargs: Any) -> list[EngineResult]:
        """Run ``requests``; responses ones as chat, the rest as they are, results in order.

        ``kwargs`` (a whole-shard engine's ``cancelled`` poll) go to the wrapped engine.
        """
        results: list[EngineResult | None] = [None] * len(requests)
        forward: list[EngineRequest] = []
        where: list[int] = []
        for i, r in enumerate(requests):
            if r.url.split("?", 1)[0].rstrip("/") != RESPONSES_URL:
                forward.append(r)
                where.append(i)
                continue
            try:
                body = chat_body(r.body)
                self._check_format(body)
            except (InvalidInput, AttributeError, TypeError) as e:
                results[i] = error_result(r.custom_id, str(e), param="body.text.format")
                continue
            forward.append(EngineRequest(custom_id=r.custom_id, url=CHAT_URL, body=body))
            where.append(i)
        inner_run: Any = self.inner.run
        done = inner_run(forward, **kwargs) if forward else []
        for i, result in zip(where, done, strict=True):
            results[i] = self._back(requests[i], result)
        return [r for r in results if r is not None]

    def _check_format(self, body: Mapping[str, Any]) -> None:
        if body.get("response_format") and self.kind in _UNCONSTRAINED:
            raise InvalidInput(
                f"the {self.kind} engine cannot constrain output to JSON (text.format "
                f"{body['response_format']['type']}); send such lines to a vllm pool or drop "
                "text.format"
            )

    @staticmethod
    def _back(request: EngineRequest, result: EngineResult) -> EngineResult:
        if request.url.split("?", 1)[0].rstrip("/") != RESPONSES_URL:
            return result
        if result.status_code != 200 or result.body is None:
            return result
        body = response_object(request.body, result.body)
        usage = body["usage"]
        return EngineResult(
            custom_id=result.custom_id,
            status_code=200,
            body=body,
            input_tokens=usage["input_tokens"],
            output_tokens=usage["output_tokens"],
        )
