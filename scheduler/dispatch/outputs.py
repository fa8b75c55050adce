"""OpenAI batch output and error lines, and atomic JSONL writes (shared by workers and finalize)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."


def request_ids(batch_id: str, custom_id: str) -> tuple[str, str]:
    """Deterministic ``(batch_req_..., req_...)`` ids, so a re-run writes identical ids."""
    digest = hashlib.sha256(f"{batch_id}\x00{custom_id}".encode()).hexdigest()
    return f"batch_req_{digest[:24]}", f"req_{digest[24:48]}"


def success_line(batch_id: str, custom_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """An output-file line for a request that succeeded (status 200)."""
    line_id, request_id = request_ids(batch_id, custom_id)
    return {
        "id": line_id,
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": request_id, "body": dict(body)},
        "error": None,
    }


def failure_line(
    batch_id: str,
    custom_id: str,
    status_code: int,
    error: Mapping[str, Any] | None,
    body: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An error-file line for a request the engine answered with an error status."""
    line_id, request_id = request_ids(batch_id, custom_id)
    err = dict(error or {"code": "engine_error", "message": "the engine returned no detail"})
    err.setdefault("type", "invalid_request_error" if 400 <= status_code < 500 else "server_error")
    err.setdefault("param", None)
    return {
        "id": line_id,
        "custom_id": custom_id,
        "response": {
            "status_code": status_code,
            "request_id": request_id,
            "body": dict(body) if body else {"error": err},
        },
        "error": None,
    }


def unexecuted_line(batch_id: str, custom_id: str, code: str, message: str) -> dict[str, Any]:
    """An error-file line for a request that never got a response (expired, shard failed)."""
    line_id, _ = request_ids(batch_id, custom_id)
    return {
        "id": line_id,
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }


# Characters JSON leaves raw that ``str.splitlines()`` (and some JSONL readers) take for line
# breaks: NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR. Escaped, a line stays one line everywhere.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def jsonl_line(obj: Mapping[str, Any]) -> str:
    """``obj`` as one compact JSONL line (UTF-8 kept, Unicode line breaks escaped), with ``\\n``."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).translate(_LINE_BREAKS) + "\n"


def write_jsonl_atomic(path: Path, lines: Iterable[Mapping[str, Any]]) -> int:
    """Write ``lines`` as JSONL to a temporary file and rename it onto ``path``.

    A re-run replaces the file whole, so a file never holds a line twice. A write that fails
    (``OSError``: full disk, quota, read-only) removes its temporary file and raises.

    Returns:
        The number of bytes written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for line in lines:
                fh.write(jsonl_line(line))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, a quota: leave no half-written temporary behind
        tmp.unlink(missing_ok=True)
        raise
    return path.stat().st_size


def read_jsonl(path: str | Path | None) -> list[dict[str, Any]]:
    """Read a JSONL file; a missing path yields no lines."""
    if not path:
        return []
    p = Path(path)
    if not p.exists():
        return []
    with p.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
