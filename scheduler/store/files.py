"""File repository: content on disk written atomically, one row per file, tenant-scoped reads.

Invariant: a visible file row always has its content. Content is written to a temporary file
under ``files_dir/.tmp``, fsynced, renamed to ``files_dir/<file_id>``, and only then is the row
inserted; if the insert fails the content is removed. A crash in between leaves at most a
temporary file or an unreferenced content file, which ``sweep_files`` removes at startup.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.clock import filesystem_time
from scheduler.domain import TERMINAL_BATCH_STATUSES
from scheduler.errors import InvalidTransition, NotFound
from scheduler.store.paging import cursor_page, new_id, storable
from scheduler.store.staging import TMP_DIR as TMP_DIR
from scheduler.store.staging import StagedContent as StagedContent
from scheduler.store.staging import Stager
from scheduler.store.tables import Batch, File, now_utc

CHUNK_BYTES = 1 << 20
FILE_PREFIX = "file-"
PURPOSES = ("batch", "batch_output")

Source = BinaryIO | Iterable[bytes] | Path


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What ``sweep_files`` removed."""

    temp_removed: int = 0
    orphans_removed: int = 0
    deleted_purged: int = 0


def _chunks(source: Source) -> Iterable[bytes]:
    if isinstance(source, Path):
        with source.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                yield chunk
    elif hasattr(source, "read"):
        while chunk := source.read(CHUNK_BYTES):
            yield chunk
    else:
        yield from source


def stage_content(
    files_dir: Path, source: Source, *, max_bytes: int | None = None
) -> StagedContent:
    """Copy ``source`` in 1 MiB chunks to a temporary file, hashing and counting on the way.

    Memory stays at one chunk whatever the size.

    Args:
        files_dir: The store's file directory (``settings.files_dir``).
        source: A binary file object, an iterable of byte chunks, or a path to copy.
        max_bytes: Refuse content larger than this many bytes.

    Raises:
        LimitExceeded: the content is larger than ``max_bytes`` (nothing is left behind).
    """
    stager = Stager(files_dir, max_bytes)
    try:
        for chunk in _chunks(source):
            stager.write(chunk)
        return stager.finish()
    except BaseException:
        stager.discard()
        raise


def add_file(
    session: Session,
    files_dir: Path,
    staged: StagedContent,
    *,
    tenant_id: str,
    filename: str,
    purpose: str,
    file_id: str | None = None,
    expires_at: int | None = None,
    expires_after_s: int | None = None,
) -> File:
    """Move staged content into place and add its row to ``session`` (flushed, not committed).

    If the caller's transaction then fails, it must call ``discard_content(file)``; prefer
    ``save_file``, which commits and cleans up itself.
    """
    fid = file_id or new_id(FILE_PREFIX)
    final = (files_dir / fid).resolve()
    os.replace(staged.tmp_path, final)
    _fsync_dir(files_dir)  # the rename itself must survive a power cut before the row commits
    created_at = int(now_utc().timestamp())
    if expires_after_s is not None:
        expires_at = created_at + expires_after_s
    row = File(
        id=fid,
        tenant_id=tenant_id,
        filename=clean_filename(filename),
        purpose=purpose,
        bytes=staged.bytes,
        sha256=staged.sha256,
        path=str(final),
        status="processed",
        created_at=created_at,
        expires_at=expires_at,
        deleted=False,
    )
    try:
        session.add(row)
        session.flush()
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    return row


def clean_filename(filename: str) -> str:
    """``filename`` as stored: at most 500 characters, no NUL, lone surrogates replaced."""
    name = filename.replace("\x00", "")[:500]
    return name if storable(name) else name.encode("utf-8", "replace").decode()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def discard_content(file: File) -> None:
    """Remove a file's content after its row failed to commit."""
    Path(file.path).unlink(missing_ok=True)


def save_file(
    session: Session,
    files_dir: Path,
    source: Source,
    *,
    tenant_id: str,
    filename: str,
    purpose: str,
    max_bytes: int | None = None,
    file_id: str | None = None,
    expires_at: int | None = None,
    expires_after_s: int | None = None,
    before_commit: Callable[[Session, File], None] | None = None,
) -> File:
    """Store ``source`` as a new file and COMMIT ``session``; nothing is left if any step fails.

    Order: content to a temporary file, fsync, rename into place, insert the row, commit. On any
    failure the session is rolled back and the content removed. With an explicit ``file_id`` the
    call is idempotent: if that file already exists it is returned unchanged (a retried
    finalizer does not produce a second output file).

    Args:
        session: Session to insert and commit with (pending changes are committed too).
        files_dir: ``settings.files_dir``.
        source: Binary file object, iterable of byte chunks, or path to copy.
        tenant_id: Owner.
        filename: Name shown to the client.
        purpose: ``batch`` (uploads) or ``batch_output`` (outputs and error files).
        max_bytes: Size limit in bytes.
        file_id: Deterministic id (idempotent retries); default a new ``file-...`` id.
        expires_at: Unix seconds after which the file may be removed.
        expires_after_s: Or: seconds after its creation (wins over ``expires_at``).
        before_commit: Called with the session and the flushed row just before the commit (a
            quota held in the same transaction); what it raises undoes everything.

    Raises:
        LimitExceeded: content larger than ``max_bytes``.
    """
    if file_id is not None:
        existing = session.get(File, file_id)
        if existing is not None:
            return existing
    staged = stage_content(files_dir, source, max_bytes=max_bytes)
    return save_staged(
        session,
        files_dir,
        staged,
        tenant_id=tenant_id,
        filename=filename,
        purpose=purpose,
        file_id=file_id,
        expires_at=expires_at,
        expires_after_s=expires_after_s,
        before_commit=before_commit,
    )


def save_staged(
    session: Session,
    files_dir: Path,
    staged: StagedContent,
    *,
    tenant_id: str,
    filename: str,
    purpose: str,
    file_id: str | None = None,
    expires_at: int | None = None,
    expires_after_s: int | None = None,
    before_commit: Callable[[Session, File], None] | None = None,
) -> File:
    """``save_file`` for content already staged (``Stager``): move it into place, insert the
    row, run ``before_commit``, COMMIT; on any failure nothing is left (see ``save_file``)."""
    fid = file_id or new_id(FILE_PREFIX)
    try:
        row = add_file(
            session,
            files_dir,
            staged,
            tenant_id=tenant_id,
            filename=filename,
            purpose=purpose,
            file_id=fid,
            expires_at=expires_at,
            expires_after_s=expires_after_s,
        )
        if before_commit is not None:
            before_commit(session, row)
        session.commit()
    except BaseException:
        session.rollback()
        staged.tmp_path.unlink(missing_ok=True)
        # With a caller-chosen id a concurrent retry may own the content; when unsure, keep it
        # (an unreferenced content file is swept later, a row without content is never made).
        keep = file_id is not None
        if keep:
            with contextlib.suppress(Exception):
                keep = session.get(File, fid) is not None
        if not keep:
            (files_dir / fid).unlink(missing_ok=True)
        raise
    return row


def content_path(file: File) -> Path:
    """Where a file's bytes are on disk."""
    return Path(file.path)


def get_file(session: Session, tenant_id: str | None, file_id: str) -> File:
    """Return a visible file of ``tenant_id`` (None: any tenant, for internal callers).

    Raises:
        NotFound: no such file, deleted, or another tenant's.
    """
    row = session.get(File, file_id) if storable(file_id) else None
    if row is None or row.deleted or (tenant_id is not None and row.tenant_id != tenant_id):
        if row is not None and row.status == "expired" and row.tenant_id == tenant_id:
            raise NotFound(
                f"file {row.id} expired at {row.expires_at} (Unix seconds; its expires_after "
                "policy) and its content was deleted"
            )
        raise NotFound(f"no file {file_id[:80]!r}: list yours with GET /v1/files")
    return row


def list_files(
    session: Session,
    tenant_id: str,
    *,
    purpose: str | None = None,
    after: str | None = None,
    limit: int = 10_000,
    newest_first: bool = True,
) -> tuple[list[File], bool]:
    """One page of the tenant's visible files, newest first; returns ``(files, has_more)``."""
    if purpose and not storable(purpose):
        return [], False  # no file can have it
    stmt = select(File).where(File.tenant_id == tenant_id, File.deleted.is_(False))
    if purpose:
        stmt = stmt.where(File.purpose == purpose)
    return cursor_page(session, stmt, File.id, after=after, limit=limit, newest_first=newest_first)


def delete_file(session: Session, tenant_id: str, file_id: str) -> File:
    """Mark a file deleted (hidden from then on); the caller commits, then ``purge_content``.

    Raises:
        NotFound: no such visible file of this tenant.
        InvalidTransition: a batch that has not finished still reads this file (409).
    """
    row = get_file(session, tenant_id, file_id)
    users = batches_using(session, row.id)
    if users:
        raise InvalidTransition(
            f"file {row.id} is the input of batch {users[0][0]}, which is {users[0][1]}; "
            "wait until it has finished (or cancel it), then delete the file"
        )
    row.deleted = True
    session.flush()
    return row


def batches_using(session: Session, file_id: str) -> list[tuple[str, str]]:
    """``(batch_id, status)`` of the batches not yet finished whose input is ``file_id``."""
    finished = [s.value for s in TERMINAL_BATCH_STATUSES]
    rows = session.execute(
        select(Batch.id, Batch.status)
        .where(Batch.input_file_id == file_id, Batch.status.not_in(finished))
        .order_by(Batch.created_at)
        .limit(5)
    ).all()
    return [(str(b), str(st)) for b, st in rows]


def file_in_use(session: Session, file_id: str) -> bool:
    """Whether a batch that has not finished still reads ``file_id``."""
    return bool(batches_using(session, file_id))


def purge_content(session: Session, file: File) -> bool:
    """Remove the content of a deleted file unless a batch still running needs it.

    Returns:
        Whether the content was removed (else ``sweep_files`` removes it later).
    """
    if not file.deleted or file_in_use(session, file.id):
        return False
    Path(file.path).unlink(missing_ok=True)
    return True


def sweep_files(session: Session, files_dir: Path, *, grace_s: float = 900.0) -> SweepReport:
    """Remove leftovers of interrupted writes and content of deleted files no batch needs.

    Args:
        session: Open session (read-only use).
        files_dir: ``settings.files_dir``.
        grace_s: Only touch temporary or unreferenced files older than this many seconds, so a
            concurrent upload in another process is never disturbed.
    """
    if not files_dir.is_dir():
        return SweepReport()
    cutoff = filesystem_time() - grace_s  # file mtimes: the file system's clock
    temp = orphans = purged = 0
    tmp_dir = files_dir / TMP_DIR
    if tmp_dir.is_dir():
        for p in tmp_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if p.is_file() and p.stat().st_mtime <= cutoff:
                    p.unlink()
                    temp += 1
    on_disk = {
        p.name: p for p in files_dir.iterdir() if p.name.startswith(FILE_PREFIX) and p.is_file()
    }
    if on_disk:
        rows = session.execute(select(File.id, File.deleted)).all()
        known = {fid: deleted for fid, deleted in rows}
        for name, p in on_disk.items():
            with contextlib.suppress(FileNotFoundError):
                if name not in known and p.stat().st_mtime <= cutoff:
                    p.unlink()
                    orphans += 1
                elif known.get(name) and not file_in_use(session, name):
                    p.unlink()
                    purged += 1
    return SweepReport(temp_removed=temp, orphans_removed=orphans, deleted_purged=purged)
