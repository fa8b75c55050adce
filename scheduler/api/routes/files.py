"""OpenAI ``/v1/files``: upload (streamed to disk), list, retrieve, content, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from scheduler.api.deps import SessionDep, SettingsDep, TenantDep
from scheduler.api.multipart import UploadForm, parse_upload
from scheduler.api.schemas import FileDeleted, FileList, FileObject
from scheduler.api.spool import SPOOL_STATE
from scheduler.config import Settings
from scheduler.errors import GridshiftError, InvalidInput, LineError
from scheduler.intake.expiry import BATCH_INPUT_DEFAULT_S, ExpiresAfter, parse_expires_after
from scheduler.store import files as repo
from scheduler.store.quotas import check_file_quota, hold_file_quota
from scheduler.store.tables import File as FileRow
from scheduler.store.tenants import Caller

router = APIRouter(prefix="/v1", tags=["files"])

UPLOAD_PURPOSES = ("batch",)


# The form the openai client sends; parsed from the guard's spool, documented here for OpenAPI.
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": list(UPLOAD_PURPOSES)},
                        "expires_after[anchor]": {"type": "string"},
                        "expires_after[seconds]": {"type": "string"},
                    },
                }
            }
        },
    }
}


def _spooled_body(request: Request) -> Path:
    path: Path | None = request.scope.get("state", {}).get(SPOOL_STATE)
    if path is None:  # only the request guard's upload path spools bodies
        raise GridshiftError("the upload was not spooled by the request guard")
    return path


@router.post("/files", openapi_extra=UPLOAD_BODY)
def create_file(
    request: Request, session: SessionDep, settings: SettingsDep, caller: TenantDep
) -> FileObject:
    """Store an uploaded file: the multipart body the guard spooled to the data directory is
    parsed there, the file part staged (hashed, byte-capped) and moved into place.

    ``expires_after`` (the openai client sends ``expires_after[anchor]`` and
    ``expires_after[seconds]`` form fields) sets ``expires_at``; a ``batch`` file without it
    expires after 30 days, as on OpenAI.
    """
    form = parse_upload(
        _spooled_body(request),
        request.headers.get("content-type", ""),
        settings.files_dir,
        max_file_bytes=settings.max_file_bytes,
    )
    try:
        return FileObject.from_row(_keep(session, settings, caller, form))
    except BaseException:
        form.discard()
        raise


def _keep(session: Session, settings: Settings, caller: Caller, form: UploadForm) -> FileRow:
    purpose = form.fields.get("purpose")
    if purpose not in UPLOAD_PURPOSES:
        msg = f"purpose must be one of {list(UPLOAD_PURPOSES)}, got {purpose!r}"
        raise InvalidInput(msg, [LineError(None, "invalid_value", msg, "purpose")])
    if form.file is None:
        msg = "the form has no 'file' part: send the JSONL file as the 'file' field"
        raise InvalidInput(msg, [LineError(None, "invalid_request", msg, "file")])
    anchor = form.fields.get("expires_after[anchor]")
    seconds = form.fields.get("expires_after[seconds]")
    policy = (
        parse_expires_after({"anchor": anchor, "seconds": seconds}, "expires_after")
        if anchor is not None or seconds is not None
        else ExpiresAfter(seconds=BATCH_INPUT_DEFAULT_S)
    )
    assert policy is not None
    check_file_quota(
        session,
        caller.tenant_id,
        max_files=settings.tenant_max_files,
        max_bytes=settings.tenant_max_stored_bytes,
        incoming_bytes=form.file.bytes,
    )
    return repo.save_staged(
        session,
        settings.files_dir,
        form.file,
        tenant_id=caller.tenant_id,
        filename=form.filename,
        purpose=purpose,
        expires_after_s=policy.seconds,
        before_commit=lambda s, _row: hold_file_quota(
            s,
            caller.tenant_id,
            max_files=settings.tenant_max_files,
            max_bytes=settings.tenant_max_stored_bytes,
        ),
    )


@router.get("/files")
def list_files(
    session: SessionDep,
    caller: TenantDep,
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
) -> FileList:
    """List the caller's files, newest first by default, with OpenAI cursor pagination."""
    rows, has_more = repo.list_files(
        session,
        caller.tenant_id,
        purpose=purpose,
        after=after,
        limit=limit,
        newest_first=order == "desc",
    )
    return FileList.of([FileObject.from_row(r) for r in rows], has_more=has_more)


@router.get("/files/{file_id}")
def retrieve_file(session: SessionDep, caller: TenantDep, file_id: str) -> FileObject:
    """One of the caller's files."""
    return FileObject.from_row(repo.get_file(session, caller.tenant_id, file_id))


@router.get(
    "/files/{file_id}/content",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The file's bytes",
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        }
    },
)
def file_content(session: SessionDep, caller: TenantDep, file_id: str) -> FileResponse:
    """The bytes of one of the caller's files, streamed from disk."""
    row = repo.get_file(session, caller.tenant_id, file_id)
    return FileResponse(
        repo.content_path(row), media_type="application/octet-stream", filename=row.filename
    )


@router.delete("/files/{file_id}")
def delete_file(session: SessionDep, caller: TenantDep, file_id: str) -> FileDeleted:
    """Delete one of the caller's files (content kept while a running batch still reads it)."""
    row = repo.delete_file(session, caller.tenant_id, file_id)
    session.commit()
    repo.purge_content(session, row)
    return FileDeleted(id=row.id)
