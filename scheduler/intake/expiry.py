"""OpenAI expiration policies: ``expires_after`` on files, ``output_expires_after`` on batches."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.errors import InvalidInput, LineError

MIN_EXPIRY_S = 3_600  # one hour, OpenAI's bounds
MAX_EXPIRY_S = 2_592_000  # thirty days
BATCH_INPUT_DEFAULT_S = MAX_EXPIRY_S  # files with purpose "batch" expire after 30 days by default


@dataclass(frozen=True, slots=True)
class ExpiresAfter:
    """``{anchor: "created_at", seconds: N}``: the object expires N seconds after creation."""

    seconds: int
    anchor: str = "created_at"

    def expires_at(self, created_at: int) -> int:
        """Unix seconds at which an object created at ``created_at`` expires."""
        return created_at + self.seconds


def parse_expires_after(raw: Any, param: str) -> ExpiresAfter | None:
    """Read an expiration policy (a mapping, or None); ``param`` names it in errors.

    Raises:
        InvalidInput: the anchor is not ``created_at`` or the seconds are outside
            3600..2592000 (one hour to thirty days), as OpenAI requires.
    """
    if raw is None:
        return None

    def bad(message: str) -> InvalidInput:
        return InvalidInput(message, [LineError(None, "invalid_value", message, param)])

    if not isinstance(raw, Mapping):
        raise bad(f"{param} must be an object {{anchor: 'created_at', seconds: N}}")
    anchor = raw.get("anchor")
    if anchor != "created_at":
        raise bad(f"{param}.anchor must be 'created_at', got {str(anchor)[:40]!r}")
    seconds = raw.get("seconds")
    if isinstance(seconds, str) and seconds.strip().isascii() and seconds.strip().isdigit():
        seconds = int(seconds)  # multipart form fields arrive as text
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise bad(f"{param}.seconds must be a whole number of seconds, got {str(seconds)[:40]!r}")
    if not MIN_EXPIRY_S <= seconds <= MAX_EXPIRY_S:
        raise bad(
            f"{param}.seconds must be between {MIN_EXPIRY_S} (1 hour) and {MAX_EXPIRY_S} "
            f"(30 days), got {seconds}"
        )
    return ExpiresAfter(seconds=seconds)
