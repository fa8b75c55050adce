"""Validation of ``/v1/chat/completions`` and ``/v1/completions`` request bodies (one line each).

Each checker makes one pass over a body and returns ``(prompt_chars, max_tokens)`` (0 where
``max_tokens`` is unset) or an error ``(code, message, param)``: the same contract as the
embeddings and responses checkers in ``bodies.py``. Options an engine may not honour are checked
afterwards against the line's model (``engine_options.OptionCheck``), not here.
"""

from __future__ import annotations

from typing import Any

from scheduler.intake.bounds import MAX_CHOICES, MAX_OUTPUT_TOKENS

Err = tuple[str, str, str | None]
Checked = Err | tuple[int, int]

INVALID_TYPE = "invalid_type"
INVALID_VALUE = "invalid_value"
MISSING_PARAMETER = "missing_required_parameter"

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

# Sampling parameters with a range, checked only when present: (low, high), in a fixed order so
# that the same line always gives the same error.
_RANGES = (
    ("temperature", 0.0, 2.0),
    ("top_p", 0.0, 1.0),
    ("presence_penalty", -2.0, 2.0),
    ("frequency_penalty", -2.0, 2.0),
)
_CHECKED = frozenset(
    {*(r[0] for r in _RANGES), "max_tokens", "max_completion_tokens", "n", "stream"}
)
_NUMBER = (int, float)


def _show(value: Any) -> str:
    """``repr`` of a client value, cut to 80 characters (a huge line must not make huge errors)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def max_tokens_key(body: dict[str, Any], endpoint_key: str) -> str:
    """The key a body gave its output limit under (``endpoint_key`` wins over ``max_tokens``)."""
    return endpoint_key if body.get(endpoint_key) is not None else "max_tokens"


def _sampling(body: dict[str, Any], max_key: str) -> Err | int:
    """Check the sampling parameters present; return max_tokens (0 if unset) or an error."""
    present = _CHECKED.intersection(body)  # one C-level pass; most bodies set two or three
    if not present:
        return 0
    for key, lo, hi in _RANGES:
        if key in present:
            v = body[key]
            if v is not None and not (type(v) in _NUMBER and lo <= v <= hi):
                return (
                    INVALID_VALUE,
                    f"{key} must be a number in [{lo:g}, {hi:g}], got {_show(v)}",
                    f"body.{key}",
                )
    if "n" in present:
        n = body["n"]
        if n is not None and not (type(n) is int and 1 <= n <= MAX_CHOICES):
            return (
                INVALID_VALUE,
                f"n must be a whole number from 1 to {MAX_CHOICES}, got {_show(n)}",
                "body.n",
            )
    if "stream" in present and body["stream"]:
        return INVALID_VALUE, "stream must be false or absent in a batch", "body.stream"
    mt = body.get(max_key)
    if mt is None:
        mt = body.get("max_tokens")
        max_key = "max_tokens"
        if mt is None:
            return 0
    if type(mt) is not int or not 1 <= mt <= MAX_OUTPUT_TOKENS:
        return (
            INVALID_VALUE,
            f"{max_key} must be a positive integer of at most {MAX_OUTPUT_TOKENS}, got {_show(mt)}",
            f"body.{max_key}",
        )
    return mt


def _message_chars(i: int, m: Any) -> Err | int:
    """Characters of message ``i`` of a chat body (its text parts), or what is wrong with it."""
    if type(m) is not dict:
        return INVALID_TYPE, f"messages[{i}] must be an object", f"body.messages[{i}]"
    role = m.get("role")
    if type(role) is not str or role not in ROLES:  # a list or object is unhashable
        return (
            INVALID_VALUE,
            f"messages[{i}].role must be one of {sorted(ROLES)}, got {_show(role)}",
            f"body.messages[{i}].role",
        )
    c = m.get("content")
    if type(c) is str:
        return len(c)
    if type(c) is list:
        chars = 0
        for part in c:
            if type(part) is not dict:
                return (
                    INVALID_TYPE,
                    f"messages[{i}].content parts must be objects",
                    f"body.messages[{i}].content",
                )
            text = part.get("text")
            if type(text) is str:
                chars += len(text)
        return chars
    if c is None:
        if role != "assistant":
            return (
                MISSING_PARAMETER,
                f"messages[{i}].content is required for role {role!r}",
                f"body.messages[{i}].content",
            )
        return 0
    return (
        INVALID_TYPE,
        f"messages[{i}].content must be a string or an array of parts",
        f"body.messages[{i}].content",
    )


def check_chat(body: dict[str, Any]) -> Checked:
    """Check a chat completions body: its messages, then its sampling parameters."""
    msgs = body.get("messages")
    if type(msgs) is not list or not msgs:
        if msgs is None:
            return (
                MISSING_PARAMETER,
                "body.messages is required for /v1/chat/completions",
                "body.messages",
            )
        return (
            INVALID_TYPE,
            "messages must be a non-empty array of message objects",
            "body.messages",
        )
    chars = 0
    for i, m in enumerate(msgs):
        # the common message, {role, content: str} with a known role, costs no call
        c = m.get("content") if type(m) is dict else None
        r = m.get("role") if type(c) is str else None
        if type(r) is str and r in ROLES:
            chars += len(c)  # type: ignore[arg-type]  # c is a str here
            continue
        one = _message_chars(i, m)
        if isinstance(one, tuple):
            return one
        chars += one
    mt = _sampling(body, "max_completion_tokens")
    return mt if isinstance(mt, tuple) else (chars, mt)


def check_completion(body: dict[str, Any]) -> Checked:
    """Check a completions body: its prompt (text or token ids), then its sampling parameters."""
    prompt = body.get("prompt")
    if type(prompt) is str:
        chars = len(prompt)
    elif prompt is None:
        return MISSING_PARAMETER, "body.prompt is required for /v1/completions", "body.prompt"
    elif type(prompt) is list and prompt and all(type(x) is str for x in prompt):
        chars = sum(map(len, prompt))
    elif type(prompt) is list and prompt and all(type(x) is int for x in prompt):
        chars = 4 * len(prompt)  # token ids: 4 characters per token, intake's estimate ratio
    else:
        return (
            INVALID_TYPE,
            "prompt must be a string, an array of strings or of token ids",
            "body.prompt",
        )
    mt = _sampling(body, "max_tokens")
    return mt if isinstance(mt, tuple) else (chars, mt)
