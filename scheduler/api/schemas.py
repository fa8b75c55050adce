"""Pydantic models of what crosses the HTTP API, shaped like OpenAI's objects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from scheduler.store.tables import Batch as BatchRow
from scheduler.store.tables import File as FileRow


class FileObject(BaseModel):
    """OpenAI ``file`` object."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"
    expires_at: int | None = None
    status_details: str | None = None

    @classmethod
    def from_row(cls, row: FileRow) -> FileObject:
        """Build from a ``files`` row."""
        return cls(
            id=row.id,
            bytes=row.bytes,
            created_at=row.created_at,
            filename=row.filename,
            purpose=row.purpose,
            status=row.status,
            expires_at=row.expires_at,
        )


class FileDeleted(BaseModel):
    """OpenAI answer to ``DELETE /v1/files/{id}``."""

    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class ListPage(BaseModel):
    """OpenAI cursor page fields shared by lists."""

    object: Literal["list"] = "list"
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False

    @classmethod
    def of(cls, data: Sequence[Any], *, has_more: bool) -> Self:
        """A page of ``data`` (objects with an ``id``), ``first_id``/``last_id`` from its ends."""
        return cls.model_validate(
            {
                "data": list(data),
                "first_id": data[0].id if data else None,
                "last_id": data[-1].id if data else None,
                "has_more": has_more,
            }
        )


class FileList(ListPage):
    """A page of files."""

    data: list[FileObject]


class RequestCounts(BaseModel):
    """OpenAI ``request_counts``."""

    total: int = 0
    completed: int = 0
    failed: int = 0


class InputTokensDetails(BaseModel):
    """OpenAI ``usage.input_tokens_details``."""

    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    """OpenAI ``usage.output_tokens_details``."""

    reasoning_tokens: int = 0


class BatchUsage(BaseModel):
    """OpenAI ``batch.usage``: the sum of the output lines' token usage."""

    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int = 0


class BatchError(BaseModel):
    """One entry of ``errors.data``: what is wrong, where (1-based line) and which parameter."""

    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    """OpenAI ``errors`` of a batch."""

    object: Literal["list"] = "list"
    data: list[BatchError] = Field(default_factory=list)


class Batch(BaseModel):
    """OpenAI ``batch`` object plus gridshift's ``gridshift`` field (plan and outcome)."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts
    metadata: dict[str, str] | None = None
    model: str | None = None
    usage: BatchUsage | None = None
    gridshift: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_row(cls, row: BatchRow, summary: dict[str, Any]) -> Batch:
        """Build from a ``batches`` row and its ``batch_summary``."""
        return cls(
            id=row.id,
            endpoint=row.endpoint,
            errors=BatchErrors.model_validate(row.errors) if row.errors else None,
            input_file_id=row.input_file_id,
            completion_window=row.completion_window,
            status=row.status,
            output_file_id=row.output_file_id,
            error_file_id=row.error_file_id,
            created_at=row.created_at,
            in_progress_at=row.in_progress_at,
            expires_at=row.expires_at,
            finalizing_at=row.finalizing_at,
            completed_at=row.completed_at,
            failed_at=row.failed_at,
            expired_at=row.expired_at,
            cancelling_at=row.cancelling_at,
            cancelled_at=row.cancelled_at,
            request_counts=RequestCounts(
                total=row.request_total,
                completed=row.request_completed,
                failed=row.request_failed,
            ),
            metadata=row.metadata_,
            model=summary.get("model_ran") or row.model,
            usage=BatchUsage.model_validate(summary.get("usage") or {}),
            gridshift=summary,
        )


class BatchList(ListPage):
    """A page of batches, newest first."""

    data: list[Batch]


class BatchCreate(BaseModel):
    """Body of ``POST /v1/batches``: OpenAI's fields plus gridshift's optional extras.

    ``completion_window`` takes any whole number of hours or days (``6h``, ``24h``, ``72h``,
    ``3d``); ``deadline`` (Unix seconds or ISO 8601) overrides it. Unknown fields are ignored, as
    a newer OpenAI client may send some.
    """

    model_config = ConfigDict(extra="ignore")

    input_file_id: str
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None
    deadline: int | float | str | None = None
    # Strict: a JSON number only (lax parsing turned ``true`` or ``"3"`` silently into a number).
    min_quality: float | None = Field(None, strict=True)
    sites: list[str] | None = None
    priority: float = Field(1.0, strict=True)
    output_expires_after: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    """The inside of OpenAI's error envelope."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(BaseModel):
    """OpenAI error envelope ``{"error": {...}}``."""

    error: ErrorBody
