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
from scheduler.intake.bounds import MAX_CHARS_PER_TOKEN
from scheduler.intake.catalog import EMBEDDINGS, ModelCatalog
from scheduler.intake.targets import (
    CHAT,
    COMPLETIONS,
    CONTEXT_LENGTH_EXCEEDED,
    RESPONSES,
    UNSUPPORTED_OPTION,
    LineRules,
    Target,
)
from scheduler.store.text import storable

__all__ = ["CONTEXT_LENGTH_EXCEEDED", "UNSUPPORTED_OPTION"]

ENDPOINTS = (CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES)
DEFAULT_MAX_TOKENS = 256
MAX_LISTED_ERRORS = 1_000
MAX_CUSTOM_ID_CHARS = 500
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


def _check_envelope(obj: Any, endpoint: str) -> _Err | tuple[str, dict[str, Any]]:
    """Check a line's ``custom_id``, ``method``, ``url`` and ``body.model``; return the first
    and the body (whose ``model`` is then a string)."""
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
    return cid, body


def _check_line(
    obj: Any, endpoint: str, rules: LineRules
) -> _Err | tuple[str, str, int, int, Target]:
    """Validate one parsed line; return ``(custom_id, model, chars, max_tokens, target)``.

    One pass: the envelope, the endpoint's own body checker, then the rules of the line's model
    (engine options, output limit, context), which ``rules`` resolves once per model name.
    """
    env = _check_envelope(obj, endpoint)
    if len(env) == 3:
        return env
    cid, body = env
    model: str = body["model"]
    target = rules.targets.get(model)
    if target is None:
        target = rules.target(model)
    if not isinstance(target, Target):
        return target
    checked = rules.check_body(body, target)
    if len(checked) == 3:
        return checked
    chars, mt = checked
    if mt > target.max_output or chars // MAX_CHARS_PER_TOKEN + (mt or 1) > target.context:
        problem = rules.too_long(body, target, chars, mt)
        if problem is not None:
            return problem
    return cid, model, chars, mt, target


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
    rules = LineRules(endpoint, ModelCatalog.coerce(models), min_quality, options)
    seen: dict[str, int] = {}  # custom_id -> line; insertion order is request order
    offset = 0
    line_no = 0
    loads = json.loads
    extend = res.ints.extend
    add_error = res.add_error
    choices = endpoint in (CHAT, COMPLETIONS)
    for raw in lines:
        line_no += 1
        start = offset
        offset += len(raw)
        if line_no == 1 and raw.startswith(_BOM):
            raw = raw[3:]
            start += 3
        length = len(raw)
        if length and raw[-1] == 10:  # "\n"
            length -= 2 if length > 1 and raw[-2] == 13 else 1  # "\r\n"
        if not length or raw.isspace():
            continue
        try:
            text = raw.decode()  # strict UTF-8, as OpenAI requires (json.loads would guess UTF-16)
        except UnicodeDecodeError as e:
            add_error(
                line_no,
                INVALID_JSON_LINE,
                f"line is not valid UTF-8 (byte {e.start + 1} of the line); save the file as UTF-8",
                None,
            )
            continue
        try:
            obj = loads(text)
        except (ValueError, RecursionError) as e:
            add_error(line_no, INVALID_JSON_LINE, _json_problem(e), None)
            continue
        out = _check_line(obj, endpoint, rules)
        if len(out) == 3:
            add_error(line_no, out[0], out[1], out[2])
            continue
        cid, name, chars, mt, target = out
        first = seen.get(cid)
        if first is not None:
            add_error(
                line_no,
                DUPLICATE_CUSTOM_ID,
                f"custom_id {cid!r} already used on line {first}; custom_ids must be unique",
                "custom_id",
            )
            continue
        if len(seen) >= max_requests:
            add_error(
                None,
                TOO_MANY_REQUESTS,
                f"the file has more than {max_requests} requests "
                "(GRIDSHIFT_MAX_REQUESTS_PER_BATCH); split it into several batches",
                None,
            )
            res.custom_ids = list(seen)
            return res
        seen[cid] = line_no
        idx = target.index
        if idx < 0:  # the first request naming this model
            idx = _new_part(res, target)
            res.requested.append(name)
        n = obj["body"].get("n") if choices else None
        extend((line_no, start, length, chars // 4 or 1, mt, idx, n or 1))
    res.custom_ids = list(seen)
    if res.error_count == 0 and not seen:
        add_error(None, EMPTY_FILE, "the file has no requests: add one JSON object per line", None)
    return res


def _new_part(res: ScanResult, target: Target) -> int:
    """Give ``target`` its part index in ``res`` (parts are keyed by ``part_key``)."""
    key = target.resolved.part_key
    if key in res.models:  # two names (e.g. an alias and the model) of one part
        target.index = res.models.index(key)
    else:
        target.index = len(res.models)
        res.models.append(key)
        if target.resolved.floor is not None:
            res.floors[key] = target.resolved.floor
    return target.index


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
