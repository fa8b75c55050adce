"""Upload repository (OpenAI's Uploads API): parts streamed to disk, assembled in order into a file.

A part's content is copied in 1 MiB chunks to a temporary file (``stage_content``), fsynced and
renamed to ``files_dir/.uploads/<upload_id>/<part_id>`` before its row commits. Completing an
upload streams the listed parts, in the given order, through ``stage_content`` again (hashing
MD5 on the way), then inserts the ``files`` row and moves the upload to ``completed`` in ONE
transaction, with a compare-and-set from ``pending`` so two completions cannot both win. Memory
stays at one chunk whatever the sizes. Part content is removed once the upload is completed,
cancelled or expired (at once, or by ``sweep_uploads``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from scheduler.clock import filesystem_time, now_s
from scheduler.errors import InvalidInput, InvalidTransition, LimitExceeded, LineError, NotFound
from scheduler.store.files import (
    CHUNK_BYTES,
    FILE_PREFIX,
    Source,
    add_file,
    clean_filename,
    stage_content,
)
from scheduler.store.paging import new_id, storable
from scheduler.store.upload_tables import Upload, UploadPart

UPLOAD_PREFIX = "upload_"
PART_PREFIX = "part_"
UPLOADS_DIR = ".uploads"
PENDING, COMPLETED, CANCELLED, EXPIRED = "pending", "completed", "cancelled", "expired"


@dataclass(frozen=True, slots=True)
class UploadLimits:
    """The Uploads API's limits (settings ``max_upload_bytes`` and friends)."""

    max_upload_bytes: int
    max_part_bytes: int
    expires_s: int


def _bad(message: str, param: str, code: str = "invalid_value") -> InvalidInput:
    return InvalidInput(message, [LineError(None, code, message, param)])


def parts_dir(files_dir: Path, upload_id: str) -> Path:
    """Where the parts of ``upload_id`` are kept until it is completed, cancelled or expired."""
    return files_dir / UPLOADS_DIR / upload_id


def create_upload(
    session: Session,
    limits: UploadLimits,
    *,
    tenant_id: str,
    filename: str,
    purpose: str,
    bytes_: int,
    mime_type: str,
    file_expires_after_s: int | None,
) -> Upload:
    """Add a ``pending`` upload expecting ``bytes_`` bytes (flushed, the caller commits).

    Raises:
        InvalidInput: ``bytes_`` is not positive or over ``max_upload_bytes`` (413), or the
            filename or MIME type is empty.
    """
    if bytes_ < 1:
        raise _bad(f"bytes must be a positive number of bytes, got {bytes_}", "bytes")
    if bytes_ > limits.max_upload_bytes:
        raise LimitExceeded(
            f"bytes ({bytes_}) is over the upload limit of {limits.max_upload_bytes} bytes "
            "(GRIDSHIFT_MAX_UPLOAD_BYTES); split the requests into several files",
            [LineError(None, "limit_exceeded", "upload too large", "bytes")],
        )
    if not filename.strip():
        raise _bad(
            "filename must not be empty; give the file's name, e.g. 'batch.jsonl'", "filename"
        )
    if not mime_type.strip() or len(mime_type) > 200 or not storable(mime_type):
        raise _bad(
            "mime_type must be a MIME type of at most 200 characters, e.g. 'application/jsonl'",
            "mime_type",
        )
    created_at = now_s()
    row = Upload(
        id=new_id(UPLOAD_PREFIX),
        tenant_id=tenant_id,
        filename=clean_filename(filename),
        purpose=purpose,
        mime_type=mime_type,
        bytes=bytes_,
        status=PENDING,
        created_at=created_at,
        expires_at=created_at + limits.expires_s,
        file_expires_after_s=file_expires_after_s,
        file_id=None,
    )
    session.add(row)
    session.flush()
    return row


def get_upload(session: Session, tenant_id: str, upload_id: str) -> Upload:
    """One of the tenant's uploads; a pending one past ``expires_at`` reads ``expired``.

    Raises:
        NotFound: no such upload, or another tenant's.
    """
    row = session.get(Upload, upload_id) if storable(upload_id) else None
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(
            f"no upload {upload_id[:80]!r} of this tenant: create one with POST /v1/uploads"
        )
    if row.status == PENDING and now_s() >= row.expires_at:
        row.status = EXPIRED  # the caller's commit records it; sweep_uploads removes the parts
    return row


def _require_pending(row: Upload, action: str) -> None:
    if row.status != PENDING:
        hint = (
            f"its file is {row.file_id}"
            if row.status == COMPLETED
            else "create a new upload (POST /v1/uploads)"
        )
        raise InvalidTransition(f"upload {row.id} is {row.status}, so it cannot {action}; {hint}")


def add_part(
    session: Session,
    files_dir: Path,
    limits: UploadLimits,
    *,
    tenant_id: str,
    upload_id: str,
    source: Source,
    declared_bytes: int | None = None,
) -> UploadPart:
    """Store one part of a pending upload and COMMIT; nothing is left behind if a step fails.

    Args:
        declared_bytes: The part's size when known before reading (a multipart body's), so an
            oversized part is refused before it is copied.

    Raises:
        NotFound: no such upload of this tenant.
        InvalidTransition: the upload is not pending (409).
        LimitExceeded: the part is over ``max_part_bytes``, or all parts together over
            ``max_upload_bytes`` (413).
    """
    row = get_upload(session, tenant_id, upload_id)
    _require_pending(row, "take parts")
    session.commit()  # records a lazy expiry; ends the read before the (long) copy
    too_big = (
        f"a part may hold at most {limits.max_part_bytes} bytes (GRIDSHIFT_MAX_UPLOAD_PART_BYTES);"
        " send smaller parts"
    )
    if declared_bytes is not None and declared_bytes > limits.max_part_bytes:
        raise LimitExceeded(too_big, [LineError(None, "limit_exceeded", too_big, "data")])
    try:
        staged = stage_content(files_dir, source, max_bytes=limits.max_part_bytes)
    except LimitExceeded:
        raise LimitExceeded(too_big, [LineError(None, "limit_exceeded", too_big, "data")]) from None
    target_dir = parts_dir(files_dir, upload_id)
    part_id = new_id(PART_PREFIX)
    target = target_dir / part_id
    try:
        stored = _stored_bytes(session, upload_id)
        if stored + staged.bytes > limits.max_upload_bytes:
            msg = (
                f"the parts would hold {stored + staged.bytes} bytes, over the upload limit of "
                f"{limits.max_upload_bytes} bytes (GRIDSHIFT_MAX_UPLOAD_BYTES)"
            )
            raise LimitExceeded(msg, [LineError(None, "limit_exceeded", msg, "data")])
        target_dir.mkdir(parents=True, exist_ok=True)
        os.replace(staged.tmp_path, target)
        part = UploadPart(
            id=part_id,
            upload_id=upload_id,
            bytes=staged.bytes,
            path=str(target),
            created_at=now_s(),
        )
        session.add(part)
        session.flush()
        session.refresh(row)
        _require_pending(row, "take parts")  # completed or cancelled while this part arrived
        session.commit()
    except BaseException:
        session.rollback()
        staged.tmp_path.unlink(missing_ok=True)
        target.unlink(missing_ok=True)
        raise
    return part


def _stored_bytes(session: Session, upload_id: str) -> int:
    sizes = session.scalars(select(UploadPart.bytes).where(UploadPart.upload_id == upload_id))
    return sum(sizes)


def _ordered_parts(session: Session, row: Upload, part_ids: Sequence[str]) -> list[UploadPart]:
    if not part_ids:
        raise _bad("part_ids must list the upload's parts in order (at least one)", "part_ids")
    if len(set(part_ids)) != len(part_ids):
        dup = next(p for i, p in enumerate(part_ids) if p in part_ids[:i])
        raise _bad(f"part_ids lists part {dup[:80]!r} more than once", "part_ids")
    by_id = {
        p.id: p for p in session.scalars(select(UploadPart).where(UploadPart.upload_id == row.id))
    }
    unknown = [p for p in part_ids if p not in by_id]
    if unknown:
        raise _bad(
            f"part_ids names {unknown[0][:80]!r}, which is not a part of upload {row.id}; "
            "list only the ids that POST /v1/uploads/ID/parts returned for this upload",
            "part_ids",
        )
    return [by_id[p] for p in part_ids]


def _concatenated(parts: Iterable[UploadPart], seen: Callable[[bytes], None]) -> Iterator[bytes]:
    for part in parts:
        with Path(part.path).open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                seen(chunk)
                yield chunk


def complete_upload(
    session: Session,
    files_dir: Path,
    *,
    tenant_id: str,
    upload_id: str,
    part_ids: Sequence[str],
    md5: str | None = None,
    before_commit: Callable[[Session], None] | None = None,
) -> Upload:
    """Assemble the listed parts, in order, into a new file and COMMIT the upload ``completed``.

    Args:
        before_commit: Called in the transaction that added the file (e.g. the authoritative
            file quota check, ``hold_file_quota``); raising rolls everything back.

    Raises:
        NotFound: no such upload of this tenant.
        InvalidTransition: the upload is not pending (409).
        InvalidInput: a part id is unknown or repeated, the parts' total differs from the
            upload's ``bytes``, or ``md5`` does not match the assembled content.
    """
    row = get_upload(session, tenant_id, upload_id)
    _require_pending(row, "be completed")
    parts = _ordered_parts(session, row, part_ids)
    total = sum(p.bytes for p in parts)
    if total != row.bytes:
        raise _bad(
            f"the listed parts hold {total} bytes but the upload was created for {row.bytes}; "
            "list every part (in order) or create the upload with the right bytes",
            "part_ids",
        )
    session.commit()  # no transaction is held open while the parts are copied
    digest = hashlib.md5(usedforsecurity=False)
    staged = stage_content(files_dir, _concatenated(parts, digest.update))
    if md5 is not None and digest.hexdigest() != md5.strip().lower():
        staged.tmp_path.unlink(missing_ok=True)
        raise _bad(
            f"md5 {md5[:64]!r} does not match the assembled content's {digest.hexdigest()}; "
            "check the part order, or re-upload the parts that changed",
            "md5",
        )
    file_id = new_id(FILE_PREFIX)
    try:
        add_file(
            session,
            files_dir,
            staged,
            tenant_id=tenant_id,
            filename=row.filename,
            purpose=row.purpose,
            file_id=file_id,
            expires_after_s=row.file_expires_after_s,
        )
        moved = session.execute(
            update(Upload)
            .where(Upload.id == row.id, Upload.status == PENDING)
            .values(status=COMPLETED, file_id=file_id)
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            raise InvalidTransition(f"upload {row.id} was completed or cancelled meanwhile")
        if before_commit is not None:
            before_commit(session)
        session.commit()
    except BaseException:
        session.rollback()
        staged.tmp_path.unlink(missing_ok=True)
        (files_dir / file_id).unlink(missing_ok=True)
        raise
    session.refresh(row)
    remove_parts(files_dir, row.id)
    return row


def cancel_upload(session: Session, files_dir: Path, *, tenant_id: str, upload_id: str) -> Upload:
    """Cancel a pending upload and COMMIT; its parts are removed. Cancelling again is a no-op.

    Raises:
        NotFound: no such upload of this tenant.
        InvalidTransition: the upload is completed or expired (409).
    """
    row = get_upload(session, tenant_id, upload_id)
    if row.status != CANCELLED:
        _require_pending(row, "be cancelled")
        moved = session.execute(
            update(Upload)
            .where(Upload.id == row.id, Upload.status == PENDING)
            .values(status=CANCELLED)
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            session.rollback()
            raise InvalidTransition(f"upload {row.id} was completed meanwhile")
    session.commit()
    session.refresh(row)
    remove_parts(files_dir, row.id)
    return row


def remove_parts(files_dir: Path, upload_id: str) -> None:
    """Remove the part content of an upload that no longer needs it (rows are kept)."""
    shutil.rmtree(parts_dir(files_dir, upload_id), ignore_errors=True)


def sweep_uploads(session: Session, files_dir: Path, *, grace_s: float = 900.0) -> int:
    """Mark pending uploads past ``expires_at`` expired (COMMIT) and remove part content no
    pending upload needs (directories of unknown uploads only after ``grace_s`` seconds).

    Returns:
        How many part directories were removed.
    """
    session.execute(
        update(Upload)
        .where(Upload.status == PENDING, Upload.expires_at <= now_s())
        .values(status=EXPIRED)
    )
    session.commit()
    root = files_dir / UPLOADS_DIR
    if not root.is_dir():
        return 0
    cutoff = filesystem_time() - grace_s
    removed = 0
    for d in root.iterdir():
        row = session.get(Upload, d.name) if storable(d.name) else None
        if row is not None and row.status == PENDING:
            continue
        with contextlib.suppress(FileNotFoundError):
            if row is not None or d.stat().st_mtime <= cutoff:
                shutil.rmtree(d, ignore_errors=True)
                removed += 1
    return removed
