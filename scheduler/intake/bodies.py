"""Validation of ``/v1/embeddings`` and ``/v1/responses`` request bodies (one line at a time).

Each checker returns ``(prompt_chars, max_tokens)`` or an error ``(code, message, param)``, the
same contract as the chat and completions checks in ``validate.py``. Options no engine can
honour are refused per line, never dropped: both endpoints accept only the fields listed in
``EMBEDDING_FIELDS`` and ``RESPONSE_FIELDS`` (docs/api.md says what gridshift does with each).
"""

from __future__ import annotations

from typing import Any

from scheduler.intake.bounds import MAX_EMBEDDING_DIMENSIONS, MAX_OUTPUT_TOKENS

MAX_EMBEDDING_INPUTS = 2048
# Fields that identify the caller or steer a hosted service's routing and caching: accepted on
# every endpoint and ignored (a batch runs on the fleet, not on a service tier or a prompt cache).
HARMLESS_FIELDS = frozenset({"user", "safety_identifier", "prompt_cache_key", "service_tier"})
EMBEDDING_FIELDS = HARMLESS_FIELDS | {"model", "input", "encoding_format", "dimensions"}
RESPONSE_FIELDS = HARMLESS_FIELDS | frozenset(
    {
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "temperature",
        "top_p",
        "text",
        "metadata",
        "store",
        "stream",
        "tools",
        "truncation",
        "parallel_tool_calls",
    }
)
_RESPONSE_ROLES = frozenset({"user", "assistant", "system", "developer"})
_TEXT_PART_TYPES = frozenset({"input_text", "output_text", "text"})
_FORMAT_TYPES = frozenset({"text", "json_object", "json_schema"})

Err = tuple[str, str, str | None]
Checked = Err | tuple[int, int]

INVALID_TYPE = "invalid_type"
INVALID_VALUE = "invalid_value"
MISSING_PARAMETER = "missing_required_parameter"
UNSUPPORTED_PARAMETER = "unsupported_parameter"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _unknown(body: dict[str, Any], known: frozenset[str], endpoint: str) -> Err | None:
    extra = sorted(k for k in body if k not in known)
    if not extra:
        return None
    return (
        UNSUPPORTED_PARAMETER,
        f"{_show(extra[0])} is not supported for {endpoint} in a gridshift batch; remove it "
        f"(supported: {', '.join(sorted(known))})",
        f"body.{extra[0]}",
    )


def embedding_chars(body: dict[str, Any], *, dimensions_ok: bool) -> Checked:
    """Check an embeddings body; return its input characters (token ids count 4 each) and 0.

    ``input`` is a non-empty string, a list of up to 2,048 non-empty strings, a list of token
    ids, or a list of such lists; ``encoding_format`` is ``float`` or ``base64``;
    ``dimensions`` a positive integer, only for models whose fleet entry says
    ``supports_dimensions: true``.
    """
    bad = _unknown(body, EMBEDDING_FIELDS, "/v1/embeddings")
    if bad:
        return bad
    raw = body.get("input")
    if raw is None:
        return MISSING_PARAMETER, "body.input is required for /v1/embeddings", "body.input"
    chars = _input_chars(raw)
    if chars is None:
        return (
            INVALID_TYPE,
            "input must be a non-empty string, a list of up to 2048 non-empty strings, a list "
            "of token ids or a list of lists of token ids",
            "body.input",
        )
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        return (
            INVALID_VALUE,
            f"encoding_format must be 'float' or 'base64', got {_show(fmt)}",
            "body.encoding_format",
        )
    dims = body.get("dimensions")
    if dims is not None:
        if type(dims) is not int or not 1 <= dims <= MAX_EMBEDDING_DIMENSIONS:
            return (
                INVALID_VALUE,
                f"dimensions must be a positive integer of at most {MAX_EMBEDDING_DIMENSIONS}, "
                f"got {_show(dims)}",
                "body.dimensions",
            )
        if not dimensions_ok:
            return (
                INVALID_VALUE,
                "this model does not support 'dimensions' (its fleet entry has no "
                "supports_dimensions: true); remove it to get the model's full vectors",
                "body.dimensions",
            )
    return chars, 0


def _input_chars(raw: Any) -> int | None:
    if type(raw) is str:
        return len(raw) if raw else None
    if type(raw) is not list or not raw or len(raw) > MAX_EMBEDDING_INPUTS:
        return None
    if all(type(x) is str and x for x in raw):
        return sum(len(x) for x in raw)
    if all(type(x) is int and x >= 0 for x in raw):
        return 4 * len(raw)
    if all(type(x) is list and x and all(type(t) is int and t >= 0 for t in x) for x in raw):
        return 4 * sum(len(x) for x in raw)
    return None


def longest_input_chars(raw: Any) -> int:
    """Characters of the longest single input of a valid embeddings ``input`` (ids count 4)."""
    if type(raw) is str:
        return len(raw)
    if raw and type(raw[0]) is str:
        return max(map(len, raw))
    if raw and type(raw[0]) is list:
        return 4 * max(map(len, raw))
    return 4 * len(raw)


def response_chars(body: dict[str, Any]) -> Checked:
    """Check a responses body; return its prompt characters and ``max_output_tokens`` (0 unset).

    ``input`` is a string or a list of message items (``{role, content}`` with string content
    or ``input_text`` parts); ``instructions`` a string; ``text.format`` is ``text``,
    ``json_object`` or ``json_schema`` (with a ``schema`` object). Tools, streaming, background
    mode and conversation state (``previous_response_id``) are refused: a batch line is one
    stateless generation.
    """
    bad = _unknown(body, RESPONSE_FIELDS, "/v1/responses")
    if bad:
        return bad
    if body.get("stream"):
        return INVALID_VALUE, "stream must be false or absent in a batch", "body.stream"
    if body.get("tools"):
        return (
            UNSUPPORTED_PARAMETER,
            "tools are not supported in gridshift batches (no engine runs tool calls); remove them",
            "body.tools",
        )
    instructions = body.get("instructions")
    if instructions is not None and type(instructions) is not str:
        return INVALID_TYPE, "instructions must be a string", "body.instructions"
    chars = _response_input_chars(body.get("input"))
    if isinstance(chars, tuple):
        return chars
    mt = body.get("max_output_tokens")
    if mt is not None and (type(mt) is not int or not 1 <= mt <= MAX_OUTPUT_TOKENS):
        return (
            INVALID_VALUE,
            f"max_output_tokens must be a positive integer of at most {MAX_OUTPUT_TOKENS}, "
            f"got {_show(mt)}",
            "body.max_output_tokens",
        )
    for key, hi in (("temperature", 2.0), ("top_p", 1.0)):
        v = body.get(key)
        if v is not None and not (type(v) in (int, float) and 0.0 <= v <= hi):
            return (
                INVALID_VALUE,
                f"{key} must be a number in [0, {hi:g}], got {_show(v)}",
                (f"body.{key}"),
            )
    fmt_err = _text_format(body.get("text"))
    if fmt_err:
        return fmt_err
    return chars + len(instructions or ""), mt or 0


def _response_input_chars(raw: Any) -> Err | int:
    if raw is None:
        return MISSING_PARAMETER, "body.input is required for /v1/responses", "body.input"
    if type(raw) is str:
        return len(raw)
    if type(raw) is not list or not raw:
        return (
            INVALID_TYPE,
            "input must be a string or a non-empty list of message items",
            "body.input",
        )
    chars = 0
    for i, item in enumerate(raw):
        where = f"body.input[{i}]"
        if type(item) is not dict or item.get("type", "message") != "message":
            return (
                INVALID_VALUE,
                f"input[{i}] must be a message item {{role, content}} (other item types need "
                "tools or conversation state, which batches do not support)",
                where,
            )
        role = item.get("role")
        if type(role) is not str or role not in _RESPONSE_ROLES:
            return (
                INVALID_VALUE,
                f"input[{i}].role must be one of {sorted(_RESPONSE_ROLES)}, got {_show(role)}",
                f"{where}.role",
            )
        content = item.get("content")
        if type(content) is str:
            chars += len(content)
            continue
        if type(content) is not list:
            return (
                INVALID_TYPE,
                f"input[{i}].content must be a string or a list of input_text parts",
                f"{where}.content",
            )
        for part in content:
            if type(part) is not dict or part.get("type") not in _TEXT_PART_TYPES:
                return (
                    INVALID_VALUE,
                    f"input[{i}].content: only text parts (input_text) are supported",
                    f"{where}.content",
                )
            text = part.get("text")
            if type(text) is not str:
                return INVALID_TYPE, f"input[{i}].content parts need a string 'text'", where
            chars += len(text)
    return chars


def _text_format(text: Any) -> Err | None:
    if text is None:
        return None
    if type(text) is not dict:
        return INVALID_TYPE, "text must be an object like {'format': {'type': 'text'}}", "body.text"
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if type(fmt) is dict else None
    if kind not in _FORMAT_TYPES:
        return (
            INVALID_VALUE,
            f"text.format.type must be one of {sorted(_FORMAT_TYPES)}, got {_show(kind)}",
            "body.text.format",
        )
    if kind == "json_schema" and (
        type(fmt.get("schema")) is not dict or type(fmt.get("name")) is not str
    ):
        return (
            INVALID_VALUE,
            "text.format of type json_schema needs a 'name' and a 'schema' object",
            "body.text.format",
        )
    return None
