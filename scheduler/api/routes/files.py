"""OpenAI ``/v1/files``: upload (streamed to disk), list, retrieve, content, delete."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query, UploadFile
from fastapi.responses import FileResponse

from scheduler.api.deps import SessionDep, SettingsDep, TenantDep
from scheduler.api.schemas import FileDeleted, FileList, FileObject
from scheduler.errors import InvalidInput, LineError
from scheduler.intake.expiry import BATCH_INPUT_DEFAULT_S, ExpiresAfter, parse_expires_after
from scheduler.store import files as repo
from scheduler.store.quotas import check_file_quota, hold_file_quota

router = APIRouter(prefix="/v1", tags=["files"])

UPLOAD_PURPOSES = ("batch",)


@router.post("/files")
def create_file(
    session: SessionDep,
    settings: SettingsDep,
    caller: TenantDep,
    file: UploadFile,
    purpose: Annotated[str, Form()],
    expires_anchor: Annotated[str | None, Form(alias="expires_after[anchor]")] = None,
    expires_seconds: Annotated[str | None, Form(alias="expires_after[seconds]")] = None,
) -> FileObject:
    """Store an uploaded file (copied from Starlette's spool in 1 MiB chunks, hashed on the way).

    ``expires_after`` (the openai client sends ``expires_after[anchor]`` and
    ``expires_after[seconds]`` form fields) sets ``expires_at``; a ``batch`` file without it
    expires after 30 days, as on OpenAI.
    """
    if purpose not in UPLOAD_PURPOSES:
        msg = f"purpose must be one of {list(UPLOAD_PURPOSES)}, got {purpose!r}"
        raise InvalidInput(msg, [LineError(None, "invalid_value", msg, "purpose")])
    policy = (
        parse_expires_after({"anchor": expires_anchor, "seconds": expires_seconds}, "expires_after")
        if expires_anchor is not None or expires_seconds is not None
        else ExpiresAfter(seconds=BATCH_INPUT_DEFAULT_S)
    )
    assert policy is not None
    check_file_quota(
        session,
        caller.tenant_id,
        max_files=settings.tenant_max_files,
        max_bytes=settings.tenant_max_stored_bytes,
        incoming_bytes=file.size or 0,
    )
    row = repo.save_file(
        session,
        settings.files_dir,
        file.file,
        tenant_id=caller.tenant_id,
        filename=file.filename or "upload.jsonl",
        purpose=purpose,
        max_bytes=settings.max_file_bytes,
        expires_after_s=policy.seconds,
        before_commit=lambda s, _row: hold_file_quota(
            s,
            caller.tenant_id,
            max_files=settings.tenant_max_files,
            max_bytes=settings.tenant_max_stored_bytes,
        ),
    )
    return FileObject.from_row(row)


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
