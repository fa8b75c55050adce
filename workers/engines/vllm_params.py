"""OpenAI request options -> vLLM ``SamplingParams`` keywords, and vLLM logprobs -> OpenAI shapes.

Pure functions (no vLLM import), so every mapping is tested without a model. Every option in
``scheduler.engine_options.VLLM_OPTIONS`` is mapped here; anything else is refused before it
reaches this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from scheduler.errors import InvalidInput
from scheduler.intake.bounds import MAX_CHOICES
from workers.engines.openai_shapes import Endpoint, GenerationOptions, parse_options

MAX_TOP_LOGPROBS = 20
MAX_COMPLETION_LOGPROBS = 5


class LogprobLike(Protocol):
    """The fields of ``vllm.logprobs.Logprob`` read here."""

    @property
    def logprob(self) -> float:
        """Log probability of the token."""

    @property
    def rank(self) -> int | None:
        """Rank among the vocabulary (1 = most likely)."""

    @property
    def decoded_token(self) -> str | None:
        """The token's text."""


def _number(body: Mapping[str, Any], key: str, lo: float, hi: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise InvalidInput(f"'{key}' must be a number between {lo:g} and {hi:g}, got {value!r}")
    return float(value)


def _whole(body: Mapping[str, Any], key: str, lo: int, hi: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidInput(f"'{key}' must be a whole number between {lo} and {hi}, got {value!r}")
    return value


def logit_bias_of(body: Mapping[str, Any], vocab_size: int) -> dict[int, float] | None:
    """``logit_bias`` (token id as a string -> bias in [-100, 100]) as vLLM's ``{int: float}``."""
    raw = body.get("logit_bias")
    if raw is None or raw == {}:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidInput("'logit_bias' must be an object mapping token ids to numbers")
    out: dict[int, float] = {}
    for key, bias in raw.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise InvalidInput(f"'logit_bias' key {key!r} is not a token id") from None
        if not 0 <= token < vocab_size:
            raise InvalidInput(
                f"'logit_bias' token id {token} is outside this model's vocabulary "
                f"(0 to {vocab_size - 1})"
            )
        if isinstance(bias, bool) or not isinstance(bias, int | float) or abs(bias) > 100:
            raise InvalidInput(f"'logit_bias' value for {key} must be in [-100, 100]")
        out[token] = float(bias)
    return out


def logprobs_count(body: Mapping[str, Any], endpoint: Endpoint) -> int | None:
    """vLLM's ``logprobs`` (top-k per generated token) for the request, or None.

    Chat: ``logprobs: true`` with ``top_logprobs`` 0-20. Completions: ``logprobs`` 0-5.
    """
    if endpoint == "chat":
        wanted = body.get("logprobs")
        if wanted is not None and not isinstance(wanted, bool):
            raise InvalidInput(f"'logprobs' must be true or false for chat, got {wanted!r}")
        top = _whole(body, "top_logprobs", 0, MAX_TOP_LOGPROBS)
        if top is not None and not wanted and top > 0:
            raise InvalidInput("'top_logprobs' needs 'logprobs': true")
        return (top or 0) if wanted else None
    return _whole(body, "logprobs", 0, MAX_COMPLETION_LOGPROBS)


def structured_output_of(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """``response_format`` as ``vllm.sampling_params.StructuredOutputsParams`` keywords."""
    fmt = body.get("response_format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"json_object": True}
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if not isinstance(schema, Mapping):
            raise InvalidInput(
                "'response_format' of type json_schema needs "
                "{'json_schema': {'name': ..., 'schema': {...}}}"
            )
        return {"json": json.loads(json.dumps(schema))}
    raise InvalidInput(
        f"'response_format' type must be 'text', 'json_object' or 'json_schema', got {kind!r}"
    )


def sampling_kwargs(
    body: Mapping[str, Any],
    endpoint: Endpoint,
    *,
    max_tokens: int,
    vocab_size: int,
    max_n: int = MAX_CHOICES,
    options: GenerationOptions | None = None,
) -> dict[str, Any]:
    """Map every option of a chat or completions body to ``vllm.SamplingParams`` keywords.

    ``structured_outputs`` comes back as a dict of ``StructuredOutputsParams`` keywords (the
    engine builds the object). Temperature 0 is vLLM's greedy decoding; ``stop`` is applied by
    vLLM (the stop string is not included in the text, as with OpenAI).

    Raises:
        InvalidInput: an option has the wrong type or is out of range.
    """
    opts = options or parse_options(body, max_n=max_n)
    kwargs: dict[str, Any] = {
        "n": opts.n,
        "max_tokens": max_tokens,
        "temperature": opts.temperature,
        "top_p": opts.top_p,
        "stop": list(opts.stop) or None,
    }
    if opts.seed is not None:
        kwargs["seed"] = opts.seed
    for key, lo, hi in (
        ("presence_penalty", -2.0, 2.0),
        ("frequency_penalty", -2.0, 2.0),
        ("repetition_penalty", 0.01, 2.0),
        ("min_p", 0.0, 1.0),
    ):
        value = _number(body, key, lo, hi)
        if value is not None:
            kwargs[key] = value
    top_k = _whole(body, "top_k", -1, vocab_size)
    if top_k is not None:
        kwargs["top_k"] = 0 if top_k == -1 else top_k
    min_tokens = _whole(body, "min_tokens", 0, max_tokens)
    if min_tokens:
        kwargs["min_tokens"] = min_tokens
    bias = logit_bias_of(body, vocab_size)
    if bias:
        kwargs["logit_bias"] = bias
    count = logprobs_count(body, endpoint)
    if count is not None:
        kwargs["logprobs"] = count
    structured = structured_output_of(body)
    if structured is not None:
        kwargs["structured_outputs"] = structured
    return kwargs


def _entry(lp: LogprobLike | None, token: str) -> dict[str, Any]:
    value = max(lp.logprob, -9999.0) if lp is not None else -9999.0
    return {"token": token, "logprob": value, "bytes": list(token.encode())}


def _top(position: Mapping[int, LogprobLike], k: int) -> list[tuple[int, LogprobLike]]:
    ranked = sorted(position.items(), key=lambda kv: (kv[1].rank or 1 << 30, -kv[1].logprob))
    return ranked[:k]


def _token_text(lp: LogprobLike | None, token_id: int, decode: Any) -> str:
    if lp is not None and lp.decoded_token is not None:
        return lp.decoded_token
    return str(decode([token_id]))


def chat_logprobs(
    token_ids: Sequence[int],
    logprobs: Sequence[Mapping[int, LogprobLike]],
    top: int,
    decode: Any,
) -> dict[str, Any]:
    """OpenAI chat ``choices[].logprobs``: ``{"content": [{token, logprob, bytes, top_logprobs}]}``."""
    content = []
    for token_id, position in zip(token_ids, logprobs, strict=False):
        chosen = position.get(token_id)
        entry = _entry(chosen, _token_text(chosen, token_id, decode))
        entry["top_logprobs"] = [
            _entry(lp, _token_text(lp, tid, decode)) for tid, lp in _top(position, top)
        ]
        content.append(entry)
    return {"content": content}


def completion_logprobs(
    token_ids: Sequence[int],
    logprobs: Sequence[Mapping[int, LogprobLike]],
    top: int,
    decode: Any,
) -> dict[str, Any]:
    """OpenAI completions ``choices[].logprobs``: tokens, token_logprobs, top_logprobs, offsets."""
    tokens: list[str] = []
    values: list[float] = []
    tops: list[dict[str, float]] = []
    offsets: list[int] = []
    offset = 0
    for token_id, position in zip(token_ids, logprobs, strict=False):
        chosen = position.get(token_id)
        text = _token_text(chosen, token_id, decode)
        tokens.append(text)
        values.append(_entry(chosen, text)["logprob"])
        tops.append({_token_text(lp, tid, decode): lp.logprob for tid, lp in _top(position, top)})
        offsets.append(offset)
        offset += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": values,
        "top_logprobs": tops,
        "text_offset": offsets,
    }
