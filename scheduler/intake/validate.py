"""Streaming validation of a batch input file (JSONL), line by line, keeping only ints per line.

Every bad line is reported with its 1-based line number, an error code and a message (OpenAI's
``errors.data[]`` shape). Blank lines are skipped but counted in line numbers. ``byte_len``
excludes the line terminator, so ``file[offset:offset + len]`` is exactly the JSON of a request.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.engine_options import OptionCheck
from scheduler.errors import LineError
from scheduler.intake.bodies import embedding_chars, response_chars
from scheduler.intake.bounds import MAX_CHOICES, MAX_OUTPUT_TOKENS
from scheduler.intake.catalog import AUTO_MODEL, EMBEDDINGS, ModelCatalog, Resolved
from scheduler.store.paging import storable

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
RESPONSES = "/v1/responses"
ENDPOINTS = (CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES)
DEFAULT_MAX_TOKENS = 256
MAX_LISTED_ERRORS = 1_000
MAX_CUSTOM_ID_CHARS = 500
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_BOM = b"\xef\xbb\xbf"

# Error codes (documented in docs/api.md).
INVALID_JSON_LINE = "invalid_json_line"
INVALID_REQUEST_LINE = "invalid_request_line"
MISSING_CUSTOM_ID = "missing_custom_id"
INVALID_CUSTOM_ID = "invalid_custom_id"
DUPLICATE_CUSTOM_ID = "duplicate_custom_id"
INVALID_METHOD = "invalid_method"
INVALID_URL = "invalid_url"
INVALID_BODY = "invalid_body"
MISSING_PARAMETER = "missing_required_parameter"
INVALID_TYPE = "invalid_type"
INVALID_VALUE = "invalid_value"
MODEL_NOT_FOUND = "model_not_found"
MIN_QUALITY_REQUIRED = "min_quality_required"
EMPTY_FILE = "empty_file"
TOO_MANY_REQUESTS = "too_many_requests"
TOO_MANY_ERRORS = "too_many_errors"
UNSUPPORTED_OPTION = "unsupported_option"

_Err = tuple[str, str, str | None]  # (code, message, param)


@dataclass
class ScanResult:
    """Outcome of scanning a file: ``FIELDS`` ints per request (one flat array) and the errors.

    ``max_tokens`` is 0 where a request does not set it; ``model_index`` points into ``models``.
    The per-field properties return a new array each call: take them once, not per request.
    """

    FIELDS = (
        "line_no",
        "byte_offset",
        "byte_len",
        "input_tokens",
        "max_tokens",
        "model_index",
        "choices",
    )

    ints: array[int] = field(default_factory=lambda: array("q"))
    custom_ids: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)  # part keys: a model, "auto" or "auto@q"
    floors: dict[str, float] = field(default_factory=dict)  # part key -> floor, for auto keys
    requested: list[str] = field(default_factory=list)  # model names as the lines wrote them
    errors: list[LineError] = field(default_factory=list)
    error_count: int = 0

    def column(self, name: str) -> array[int]:
        """One field of every request, in line order (``name`` from ``FIELDS``)."""
        k = len(self.FIELDS)
        return self.ints[self.FIELDS.index(name) :: k]

    @property
    def line_no(self) -> array[int]:
        """1-based line number of each request."""
        return self.column("line_no")

    @property
    def byte_offset(self) -> array[int]:
        """Offset in bytes of each request's JSON in the file."""
        return self.column("byte_offset")

    @property
    def byte_len(self) -> array[int]:
        """Length in bytes of each request's JSON (line terminator excluded)."""
        return self.column("byte_len")

    @property
    def input_tokens(self) -> array[int]:
        """Estimated input tokens of each request (prompt characters / 4, at least 1)."""
        return self.column("input_tokens")

    @property
    def max_tokens(self) -> array[int]:
        """``max_tokens`` of each request, 0 where unset."""
        return self.column("max_tokens")

    @property
    def model_index(self) -> array[int]:
        """Index into ``models`` of each request's model."""
        return self.column("model_index")

    @property
    def choices(self) -> array[int]:
        """Completions each request asks for (its ``n``, 1 where unset or not generating)."""
        return self.column("choices")

    @property
    def requests(self) -> int:
        """Number of valid request lines."""
        return len(self.custom_ids)

    @property
    def ok(self) -> bool:
        """Whether the file can become a batch."""
        return self.error_count == 0

    def add_error(self, line: int | None, code: str, message: str, param: str | None) -> None:
        """Record an error; only the first ``MAX_LISTED_ERRORS`` are kept, all are counted."""
        self.error_count += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(LineError(line=line, code=code, message=message, param=param))

    def listed_errors(self) -> list[LineError]:
        """The kept errors, plus one entry saying how many more were not listed."""
        more = self.error_count - len(self.errors)
        if more <= 0:
            return list(self.errors)
        note = LineError(
            line=None,
            code=TOO_MANY_ERRORS,
            message=f"{more} more errors not listed (only the first {len(self.errors)} are shown)",
        )
        return [*self.errors, note]


def _show(value: Any) -> str:
    """``repr`` of a client value, cut to 80 characters (a huge line must not make huge errors)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_problem(e: ValueError | RecursionError) -> str:
    """What is wrong with a line's JSON, positioned within that line (not the parser's "line 2")."""
    if isinstance(e, json.JSONDecodeError):
        return f"line is not valid JSON: {e.msg} at character {e.pos + 1} of the line"
    if isinstance(e, RecursionError):
        return "line is not valid JSON: it is nested too deeply"
    return f"line is not valid JSON: {e}"


def _positive_int(value: Any) -> bool:
    return type(value) is int and value > 0


def _number_in(value: Any, lo: float, hi: float) -> bool:
    return type(value) in (int, float) and lo <= value <= hi


# Sampling parameters with a range, checked only when present: (low, high).
_RANGES = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}
_CHECKED = frozenset({*_RANGES, "max_tokens", "max_completion_tokens", "n", "stream"})


def _common(body: dict[str, Any], max_key: str) -> _Err | int:
    """Check sampling parameters; return max_tokens (0 if unset) or an error."""
    present = _CHECKED.intersection(body)  # one C-level pass; most bodies set two or three
    if not present:
        return 0
    for key, rng in _RANGES.items():  # fixed order: the same line always gives the same error
        if key in present:
            v = body[key]
            if v is not None and not _number_in(v, rng[0], rng[1]):
                return (
                    INVALID_VALUE,
                    f"{key} must be a number in [{rng[0]:g}, {rng[1]:g}], got {_show(v)}",
                    f"body.{key}",
                )
    n = body.get("n")
    if n is not None and not (_positive_int(n) and n <= MAX_CHOICES):
        return (
            INVALID_VALUE,
            f"n must be a whole number from 1 to {MAX_CHOICES}, got {_show(n)}",
            "body.n",
        )
    if body.get("stream"):
        return INVALID_VALUE, "stream must be false or absent in a batch", "body.stream"
    mt = body.get(max_key)
    if mt is None:
        mt = body.get("max_tokens")
        max_key = "max_tokens"
    if mt is not None and not (_positive_int(mt) and mt <= MAX_OUTPUT_TOKENS):
        return (
            INVALID_VALUE,
            f"{max_key} must be a positive integer of at most {MAX_OUTPUT_TOKENS}, got {_show(mt)}",
            f"body.{max_key}",
        )
    return mt or 0


def _chat_chars(body: dict[str, Any]) -> _Err | int:
    msgs = body.get("messages")
    if msgs is None:
        return (
            MISSING_PARAMETER,
            "body.messages is required for /v1/chat/completions",
            "body.messages",
        )
    if type(msgs) is not list or not msgs:
        return (
            INVALID_TYPE,
            "messages must be a non-empty array of message objects",
            "body.messages",
        )
    chars = 0
    for i, m in enumerate(msgs):
        if type(m) is not dict:
            return INVALID_TYPE, f"messages[{i}] must be an object", f"body.messages[{i}]"
        role = m.get("role")
        if type(role) is not str or role not in _ROLES:  # a list or object is unhashable
            return (
                INVALID_VALUE,
                f"messages[{i}].role must be one of {sorted(_ROLES)}, got {_show(role)}",
                f"body.messages[{i}].role",
            )
        c = m.get("content")
        if type(c) is str:
            chars += len(c)
        elif type(c) is list:
            for part in c:
                text = part.get("text") if type(part) is dict else None
                if type(text) is str:
                    chars += len(text)
                elif type(part) is not dict:
                    return (
                        INVALID_TYPE,
                        f"messages[{i}].content parts must be objects",
                        f"body.messages[{i}].content",
                    )
        elif c is None:
            if role != "assistant":
                return (
                    MISSING_PARAMETER,
                    f"messages[{i}].content is required for role {role!r}",
                    f"body.messages[{i}].content",
                )
        else:
            return (
                INVALID_TYPE,
                f"messages[{i}].content must be a string or an array of parts",
                f"body.messages[{i}].content",
            )
    return chars


def _completion_chars(body: dict[str, Any]) -> _Err | int:
    prompt = body.get("prompt")
    if prompt is None:
        return MISSING_PARAMETER, "body.prompt is required for /v1/completions", "body.prompt"
    if type(prompt) is str:
        return len(prompt)
    if type(prompt) is list and prompt:
        if all(type(x) is str for x in prompt):
            return sum(len(x) for x in prompt)
        if all(type(x) is int for x in prompt):
            return 4 * len(prompt)  # token ids: 4 characters per token, the same ratio as below
    return (
        INVALID_TYPE,
        "prompt must be a string, an array of strings or of token ids",
        "body.prompt",
    )


def _check_line(
    obj: Any,
    endpoint: str,
    catalog: ModelCatalog,
    min_quality: float | None,
    options: OptionCheck | None = None,
) -> _Err | tuple[str, str, int, int, Resolved]:
    """Validate one parsed line; return ``(custom_id, model, chars, max_tokens, resolved)``."""
    if type(obj) is not dict:
        return INVALID_REQUEST_LINE, "each line must be a JSON object", None
    cid = obj.get("custom_id")
    if cid is None:
        return MISSING_CUSTOM_ID, "custom_id is required", "custom_id"
    if type(cid) is not str or not cid or len(cid) > MAX_CUSTOM_ID_CHARS or not storable(cid):
        return (
            INVALID_CUSTOM_ID,
            f"custom_id must be a string of 1-{MAX_CUSTOM_ID_CHARS} characters "
            "(no NUL character or lone \\u surrogate escape)",
            "custom_id",
        )
    method = obj.get("method")
    if method != "POST":
        return INVALID_METHOD, f"method must be 'POST', got {_show(method)}", "method"
    url = obj.get("url")
    if url != endpoint:
        return (
            INVALID_URL,
            f"url must be the batch's endpoint {endpoint!r}, got {_show(url)}",
            "url",
        )
    body = obj.get("body")
    if type(body) is not dict:
        return INVALID_BODY, "body must be a JSON object with the request parameters", "body"
    model = body.get("model")
    if model is None:
        return MISSING_PARAMETER, "body.model is required (a fleet model or 'auto')", "body.model"
    if type(model) is not str:
        return INVALID_TYPE, "body.model must be a string", "body.model"
    resolved = catalog.resolve(model, endpoint, min_quality)
    if not isinstance(resolved, Resolved):
        return resolved
    if endpoint == EMBEDDINGS:
        checked = embedding_chars(body, dimensions_ok=resolved.part_key in catalog.dimensions_ok)
    elif endpoint == RESPONSES:
        checked = response_chars(body)
        fmt = ((body.get("text") or {}).get("format") or {}) if len(checked) == 2 else {}
        if options is not None and fmt.get("type") in ("json_object", "json_schema"):
            # runs on the chat path as response_format: refused where no engine constrains JSON
            target = AUTO_MODEL if resolved.floor is not None else resolved.part_key
            problem = options.problem(target, {"response_format": fmt})
            if problem is not None:
                message = problem[0].replace("'response_format'", "'text.format' (JSON output)")
                return UNSUPPORTED_OPTION, message, "body.text.format"
    else:
        chars = _chat_chars(body) if endpoint == CHAT else _completion_chars(body)
        if isinstance(chars, tuple):
            return chars
        mt = _common(body, "max_completion_tokens" if endpoint == CHAT else "max_tokens")
        if isinstance(mt, tuple):
            return mt
        target = AUTO_MODEL if resolved.floor is not None else resolved.part_key
        problem = options.problem(target, body) if options is not None else None
        if problem is not None:
            return UNSUPPORTED_OPTION, problem[0], f"body.{problem[1]}"
        checked = (chars, mt)
    if len(checked) == 3:
        return checked
    limit = catalog.output_limits.get(resolved.part_key)
    if limit is not None and checked[1] > limit:
        key = {RESPONSES: "max_output_tokens", CHAT: "max_completion_tokens"}.get(endpoint)
        key = key if key in body else "max_tokens"
        return (
            INVALID_VALUE,
            f"{key} of {checked[1]} exceeds what model {resolved.part_key!r} can generate "
            f"({limit} tokens, its max_output_tokens in the fleet); ask for at most {limit}",
            f"body.{key}",
        )
    return cid, model, checked[0], checked[1], resolved


def scan_lines(
    lines: Iterable[bytes],
    *,
    endpoint: str,
    models: Collection[str] | ModelCatalog,
    min_quality: float | None,
    max_requests: int,
    options: OptionCheck | None = None,
) -> ScanResult:
    """Validate raw JSONL lines (each with its terminator, as a binary file yields them).

    Args:
        lines: Raw lines in file order.
        endpoint: The batch's endpoint (one of ``ENDPOINTS``).
        models: The fleet's ``ModelCatalog`` (kinds, aliases, default floor), or plain
            generation-model names (``auto`` is then allowed with ``min_quality``).
        min_quality: The batch's minimum quality, or None.
        max_requests: Stop with ``too_many_requests`` beyond this many requests.
        options: Refuses lines with options no engine that serves their model honours.

    Returns:
        The per-request integers and every error found (see ``ScanResult``).
    """
    res = ScanResult()
    catalog = ModelCatalog.coerce(models)
    requested: dict[str, None] = {}
    model_idx: dict[str, int] = {}
    seen: dict[str, int] = {}  # custom_id -> line; insertion order is request order
    offset = 0
    line_no = 0
    loads = json.loads
    extend = res.ints.extend
    for raw in lines:
        line_no += 1
        start = offset
        offset += len(raw)
        if line_no == 1 and raw.startswith(_BOM):
            raw = raw[3:]
            start += 3
        if not raw or raw.isspace():
            continue
        length = len(raw)
        if raw[-1] == 10:  # "\n"
            length -= 2 if length > 1 and raw[-2] == 13 else 1  # "\r\n"
        try:
            text = raw.decode()  # strict UTF-8, as OpenAI requires (json.loads would guess UTF-16)
        except UnicodeDecodeError as e:
            res.add_error(
                line_no,
                INVALID_JSON_LINE,
                f"line is not valid UTF-8 (byte {e.start + 1} of the line); save the file as UTF-8",
                None,
            )
            continue
        try:
            obj = loads(text)
        except (ValueError, RecursionError) as e:
            res.add_error(line_no, INVALID_JSON_LINE, _json_problem(e), None)
            continue
        out = _check_line(obj, endpoint, catalog, min_quality, options)
        if len(out) == 3:
            res.add_error(line_no, out[0], out[1], out[2])
            continue
        cid, name, chars, mt, resolved = out
        first = seen.get(cid)
        if first is not None:
            res.add_error(
                line_no,
                DUPLICATE_CUSTOM_ID,
                f"custom_id {cid!r} already used on line {first}; custom_ids must be unique",
                "custom_id",
            )
            continue
        if len(seen) >= max_requests:
            res.add_error(
                None,
                TOO_MANY_REQUESTS,
                f"the file has more than {max_requests} requests "
                "(GRIDSHIFT_MAX_REQUESTS_PER_BATCH); split it into several batches",
                None,
            )
            res.custom_ids = list(seen)
            return res
        seen[cid] = line_no
        requested[name] = None
        model = resolved.part_key
        idx = model_idx.get(model)
        if idx is None:
            idx = model_idx[model] = len(res.models)
            res.models.append(model)
            if resolved.floor is not None:
                res.floors[model] = resolved.floor
        n = obj["body"].get("n") if endpoint in (CHAT, COMPLETIONS) else None
        extend((line_no, start, length, chars // 4 or 1, mt, idx, n or 1))
    res.custom_ids = list(seen)
    res.requested = list(requested)
    if res.error_count == 0 and not seen:
        res.add_error(
            None, EMPTY_FILE, "the file has no requests: add one JSON object per line", None
        )
    return res


def scan_file(
    path: Path,
    *,
    endpoint: str,
    models: Collection[str] | ModelCatalog,
    min_quality: float | None,
    max_requests: int,
    options: OptionCheck | None = None,
) -> ScanResult:
    """Validate the JSONL file at ``path`` (streamed; see ``scan_lines`` for the arguments)."""
    with path.open("rb", buffering=1 << 20) as f:
        return scan_lines(
            f,
            endpoint=endpoint,
            models=models,
            min_quality=min_quality,
            max_requests=max_requests,
            options=options,
        )
