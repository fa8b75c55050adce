"""``gridshift run-batch``'s first pass over the input: which lines run, which are error lines.

``vllm run-batch`` refuses a whole file only when a line is not a request object at all (not
JSON, or missing ``custom_id``, ``method``, ``url`` or ``body``); every other bad line becomes
that line's error line while the rest runs. This pass does the same, with vLLM's status codes
and error-line shape (``{"id", "custom_id", "response": {"status_code", "request_id", "body":
null}, "error"}``):

* a model that is not one of the served names: 404, vLLM's ``NotFoundError`` message;
* ``stream: true``: 400, vLLM's ``"Request must not be sent in stream mode"``;
* a url this run does not serve: 400, vLLM's message naming the supported endpoints;
* anything gridshift's intake refuses (``scan_lines``, the same checks as ``POST /v1/batches``)
  and a repeated ``custom_id``: 400 with that check's message, in vLLM's ``ErrorResponse`` shape.

A line without ``model`` runs on the first served name, as in vLLM. The lines that run are
copied (byte for byte unless a model had to be filled in) to a new file that becomes the batch.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.engine_options import OptionCheck
from scheduler.errors import InvalidInput
from scheduler.intake.catalog import ModelCatalog
from scheduler.intake.validate import scan_lines

CHAT = "/v1/chat/completions"
ENDPOINTS = (CHAT, "/v1/completions")
STREAM_ERROR = "Request must not be sent in stream mode"  # vLLM's run_batch, verbatim
MAX_SHOWN = 10
_REQUIRED = (("custom_id", str), ("method", str), ("url", str), ("body", dict))


@dataclass
class LinePlan:
    """The outcome of the pass: per request line in input order, its custom_id and either a
    ready error line (it does not run) or None (it runs as part of ``kept``)."""

    endpoint: str
    kept: Path
    order: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)
    runs: int = 0

    @property
    def errors(self) -> int:
        """Lines answered by an error line without running."""
        return len(self.order) - self.runs


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def error_line(custom_id: str, status: int, error: Any) -> dict[str, Any]:
    """A batch output line in vLLM's error shape (``error`` a string or an ``ErrorResponse``)."""
    return {
        "id": _id("vllm"),
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": _id("vllm-batch"), "body": None},
        "error": error,
    }


def error_response(message: str, kind: str, status: int, param: str | None) -> dict[str, Any]:
    """vLLM's ``ErrorResponse`` body: ``{"error": {message, type, param, code}}``."""
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def _structural(obj: Any) -> str | None:
    """Why vLLM could not read this line as a request at all (None: it can)."""
    if not isinstance(obj, dict):
        return "the line is not a JSON object"
    for key, kind in _REQUIRED:
        if not isinstance(obj.get(key), kind):
            return f"'{key}' is missing or not a {'string' if kind is str else 'JSON object'}"
    return None


class LineSorter:
    """Decides, line by line, whether a request runs or is answered by an error line."""

    def __init__(
        self,
        served: Sequence[str],
        catalog: ModelCatalog,
        options: OptionCheck,
    ) -> None:
        """``served``: the names requests may use (the first is the fleet model's name)."""
        self.served = tuple(served)
        self.catalog = catalog
        self.options = options
        self.endpoint: str | None = None
        self._seen: dict[str, int] = {}

    def _vllm_error(self, body: dict[str, Any], url: str) -> dict[str, Any] | str | None:
        if url not in ENDPOINTS:
            return error_response(
                f"URL {url} was used. Supported endpoints: {', '.join(ENDPOINTS)}.",
                "BadRequestError",
                400,
                "url",
            )
        model = body.get("model")
        if model and model not in self.served:
            return error_response(
                f"The model `{model}` does not exist. Valid aliases: {', '.join(self.served)}.",
                "NotFoundError",
                404,
                "model",
            )
        if body.get("stream"):
            return STREAM_ERROR
        return None

    def sort(
        self, line_no: int, obj: dict[str, Any], raw: bytes
    ) -> tuple[dict[str, Any] | None, bytes]:
        """``(error line, b"")`` for a line that does not run, ``(None, the line to run)``."""
        cid, url, body = obj["custom_id"], obj["url"], obj["body"]
        problem = self._vllm_error(body, url)
        if problem is not None:
            status = 400 if isinstance(problem, str) else problem["error"]["code"]
            return error_line(cid, status, problem), b""
        if self.endpoint is None:
            self.endpoint = url
        elif url != self.endpoint:
            message = (
                f"this run serves {self.endpoint} (the first request line's url); run the "
                f"{url} lines from a file of their own"
            )
            return error_line(cid, 400, error_response(message, "BadRequestError", 400, "url")), b""
        if not body.get("model"):
            body["model"] = self.served[0]
            raw = json.dumps(obj, ensure_ascii=False).encode()
        first = self._seen.get(cid)
        if first is not None:
            message = f"custom_id {cid!r} already used on line {first}; custom_ids must be unique"
            return error_line(cid, 400, error_response(message, "BadRequestError", 400, None)), b""
        scan = scan_lines(
            [raw],
            endpoint=url,
            models=self.catalog,
            min_quality=None,
            max_requests=1,
            options=self.options,
        )
        if scan.errors:
            err = scan.errors[0]
            reply = error_response(err.message, "BadRequestError", 400, err.param)
            return error_line(cid, 400, reply), b""
        self._seen[cid] = line_no
        return None, raw


def sort_lines(source: Path, kept: Path, sorter: LineSorter) -> LinePlan:
    """One pass over ``source``: error lines for requests that cannot run, the rest to ``kept``.

    Raises:
        InvalidInput: a line is not a request object (vLLM's run_batch refuses such a file
            too), or no line is a request; nothing has run.
    """
    plan = LinePlan(endpoint=CHAT, kept=kept)
    refused: list[str] = []
    with source.open("rb") as src, kept.open("wb") as out:
        for line_no, raw in enumerate(src, start=1):
            raw = raw.strip()
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw:
                continue
            try:
                obj = json.loads(raw)
            except (ValueError, RecursionError) as e:
                refused.append(f"line {line_no}: not valid JSON ({str(e)[:120]})")
                continue
            why = _structural(obj)
            if why is not None:
                refused.append(f"line {line_no}: {why}")
                continue
            if refused:  # the file is refused anyway: only look for more unreadable lines
                continue
            error, run = sorter.sort(line_no, obj, raw)
            plan.order.append((obj["custom_id"], error))
            if error is None:
                out.write(run + b"\n")
                plan.runs += 1
    if refused:
        shown = "; ".join(refused[:MAX_SHOWN])
        more = f" (and {len(refused) - MAX_SHOWN} more)" if len(refused) > MAX_SHOWN else ""
        raise InvalidInput(
            f"{source} has {len(refused)} line(s) that are not batch requests: {shown}{more}. "
            "Each line must be a JSON object with custom_id, method, url and body (vLLM's "
            "run-batch refuses such a file too); fix them and run again. Nothing was run."
        )
    if not plan.order:
        raise InvalidInput(f"{source} has no requests: add one JSON object per line")
    plan.endpoint = sorter.endpoint or CHAT
    return plan
