"""OpenAI ``/v1/uploads``: create, add parts (streamed to disk), complete in order, cancel.

A completed upload's ``file`` is an ordinary ``batch`` file: ``POST /v1/batches`` validates it
as it validates any uploaded file (in the background when it is large), so the official
client's ``uploads.upload_file_chunked`` sends files over the 200 MB ``/v1/files`` limit.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, UploadFile
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from scheduler.api.deps import SessionDep, SettingsDep, TenantDep
from scheduler.api.routes.files import UPLOAD_PURPOSES
from scheduler.api.schemas import FileObject
from scheduler.config import Settings
from scheduler.errors import InvalidInput, LineError
from scheduler.intake.expiry import BATCH_INPUT_DEFAULT_S, parse_expires_after
from scheduler.store import uploads as repo
from scheduler.store.quotas import check_file_quota, hold_file_quota
from scheduler.store.tables import File as FileRow
from scheduler.store.upload_tables import Upload, UploadPart

router = APIRouter(prefix="/v1", tags=["uploads"])


class UploadCreate(BaseModel):
    """Body of ``POST /v1/uploads`` (OpenAI's fields; unknown ones are ignored)."""

    model_config = ConfigDict(extra="ignore")

    bytes: int = Field(strict=True)
    filename: str
    mime_type: str
    purpose: str
    expires_after: dict[str, Any] | None = None


class UploadComplete(BaseModel):
    """Body of ``POST /v1/uploads/{id}/complete``."""

    model_config = ConfigDict(extra="ignore")

    part_ids: list[str]
    md5: str | None = None


class UploadObject(BaseModel):
    """OpenAI ``upload`` object; ``file`` is set once it is completed."""

    id: str
    object: Literal["upload"] = "upload"
    bytes: int
    created_at: int
    expires_at: int
    filename: str
    purpose: str
    status: str
    file: FileObject | None = None


class UploadPartObject(BaseModel):
    """OpenAI ``upload.part`` object."""

    id: str
    object: Literal["upload.part"] = "upload.part"
    created_at: int
    upload_id: str


def limits(settings: Settings) -> repo.UploadLimits:
    """The upload limits of ``settings``."""
    return repo.UploadLimits(
        max_upload_bytes=settings.max_upload_bytes,
        max_part_bytes=settings.max_upload_part_bytes,
        expires_s=settings.upload_expires_s,
    )


def _public(session: Session, row: Upload) -> UploadObject:
    file = None
    stored = session.get(FileRow, row.file_id) if row.file_id is not None else None
    if stored is not None and not stored.deleted:
        file = FileObject.from_row(stored)
    return UploadObject(
        id=row.id,
        bytes=row.bytes,
        created_at=row.created_at,
        expires_at=row.expires_at,
        filename=row.filename,
        purpose=row.purpose,
        status=row.status,
        file=file,
    )


@router.post("/uploads")
def create_upload(
    body: UploadCreate, session: SessionDep, settings: SettingsDep, caller: TenantDep
) -> UploadObject:
    """Start an upload of ``bytes`` bytes (``pending``; it expires after an hour by default)."""
    if body.purpose not in UPLOAD_PURPOSES:
        msg = f"purpose must be one of {list(UPLOAD_PURPOSES)}, got {body.purpose[:40]!r}"
        raise InvalidInput(msg, [LineError(None, "invalid_value", msg, "purpose")])
    policy = parse_expires_after(body.expires_after, "expires_after")
    check_file_quota(
        session,
        caller.tenant_id,
        max_files=settings.tenant_max_files,
        max_bytes=settings.tenant_max_stored_bytes,
        incoming_bytes=max(body.bytes, 0),
    )
    row = repo.create_upload(
        session,
        limits(settings),
        tenant_id=caller.tenant_id,
        filename=body.filename,
        purpose=body.purpose,
        bytes_=body.bytes,
        mime_type=body.mime_type,
        file_expires_after_s=policy.seconds if policy else BATCH_INPUT_DEFAULT_S,
    )
    session.commit()
    return _public(session, row)


@router.post("/uploads/{upload_id}/parts")
def add_upload_part(
    upload_id: str,
    data: Annotated[UploadFile, File()],
    session: SessionDep,
    settings: SettingsDep,
    caller: TenantDep,
) -> UploadPartObject:
    """Add one part (multipart field ``data``, at most 64 MB by default), copied to disk."""
    part: UploadPart = repo.add_part(
        session,
        settings.files_dir,
        limits(settings),
        tenant_id=caller.tenant_id,
        upload_id=upload_id,
        source=data.file,
        declared_bytes=data.size,
    )
    return UploadPartObject(id=part.id, created_at=part.created_at, upload_id=part.upload_id)


@router.post("/uploads/{upload_id}/complete")
def complete_upload(
    upload_id: str,
    body: UploadComplete,
    session: SessionDep,
    settings: SettingsDep,
    caller: TenantDep,
) -> UploadObject:
    """Assemble the parts in the order of ``part_ids`` into a file (checked against ``md5``)."""
    row = repo.complete_upload(
        session,
        settings.files_dir,
        tenant_id=caller.tenant_id,
        upload_id=upload_id,
        part_ids=body.part_ids,
        md5=body.md5,
        before_commit=lambda s: hold_file_quota(
            s,
            caller.tenant_id,
            max_files=settings.tenant_max_files,
            max_bytes=settings.tenant_max_stored_bytes,
        ),
    )
    return _public(session, row)


@router.post("/uploads/{upload_id}/cancel")
def cancel_upload(
    upload_id: str, session: SessionDep, settings: SettingsDep, caller: TenantDep
) -> UploadObject:
    """Cancel a pending upload; its parts are removed."""
    row = repo.cancel_upload(
        session, settings.files_dir, tenant_id=caller.tenant_id, upload_id=upload_id
    )
    return _public(session, row)
