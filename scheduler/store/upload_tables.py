"""Tables of OpenAI's Uploads API: an ``uploads`` row per upload, an ``upload_parts`` row per part.

Part content lives on disk under ``files_dir/.uploads/<upload_id>/<part_id>`` (see
``scheduler.store.uploads``); completing an upload concatenates the parts into a ``files`` row.
Timestamps are Unix seconds, as the API shows them.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from scheduler.store.tables import Base


class Upload(Base):
    """An OpenAI ``upload``: pending until completed (then ``file_id`` is set), cancelled or
    expired."""

    __tablename__ = "uploads"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    filename: Mapped[str] = mapped_column(String(500))
    purpose: Mapped[str] = mapped_column(String(32))
    mime_type: Mapped[str] = mapped_column(String(200))
    bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(32), default="pending")
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
    # The file's own ``expires_after`` policy (seconds after the file is created).
    file_expires_after_s: Mapped[int | None] = mapped_column(Integer)
    file_id: Mapped[str | None] = mapped_column(String(64))


class UploadPart(Base):
    """An OpenAI ``upload.part``: one chunk of bytes of an upload, stored at ``path``."""

    __tablename__ = "upload_parts"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id"), index=True)
    bytes: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[int] = mapped_column(BigInteger)
