"""Upload bodies received outside the request slots, into the data directory's own spool.

A slow client uploading a file holds an upload slot (``GRIDSHIFT_MAX_CONCURRENT_UPLOADS``) while
its body arrives, never one of the request slots that authentication, reads and ``/healthz``
need. The body goes to ``files_dir/.tmp/<random>.upload.part`` (byte-counted against the limit, never
to ``$TMPDIR``); the route parses it from there once it is complete (``scheduler/api/multipart.py``)
and the spool is removed when the request ends (crash leftovers: ``sweep_files``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import BinaryIO

import anyio
from starlette.types import Message, Receive

from scheduler.store.files import TMP_DIR

SPOOL_STATE = "gridshift_upload_spool"
# Body bytes gathered in memory before one write to the spool (one thread hop per MiB).
WRITE_BYTES = 1 << 20
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class Outcome(Enum):
    """How receiving a body ended."""

    COMPLETE = "complete"
    TOO_LARGE = "too_large"
    NO_SPACE = "no_space"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True, slots=True)
class Spooled:
    """A received body: where it is, its size, and how receiving it ended."""

    path: Path
    bytes: int
    outcome: Outcome


def spool_path(files_dir: Path) -> Path:
    """A fresh spool file name under the store's temporary directory (created)."""
    tmp = files_dir / TMP_DIR
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp / f"{uuid.uuid4().hex}.upload.part"  # .part: the retention sweep's leftovers


def free_bytes(directory: Path) -> int:
    """Free space of ``directory``'s file system for unprivileged writers, in bytes."""
    return shutil.disk_usage(directory).free


def is_storage_error(exc: BaseException) -> bool:
    """True for an ``OSError`` that means the disk (or the quota on it) is full."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def _write(out: BinaryIO, data: bytes) -> None:
    out.write(data)


async def receive_to_spool(receive: Receive, path: Path, limit: int) -> Spooled:
    """Receive the whole body into ``path``; stop early past ``limit`` bytes or on a full disk
    (the partial spool is removed then; the caller removes a complete one when done)."""
    size = 0
    buffer = bytearray()
    outcome = Outcome.COMPLETE
    with path.open("wb") as out:
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    outcome = Outcome.DISCONNECTED
                    break
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    outcome = Outcome.TOO_LARGE
                    break
                buffer += chunk
                more = message.get("more_body", False)
                if len(buffer) >= WRITE_BYTES or (buffer and not more):
                    await anyio.to_thread.run_sync(_write, out, bytes(buffer))
                    buffer.clear()
                if not more:
                    break
            if outcome is Outcome.COMPLETE:
                await anyio.to_thread.run_sync(out.flush)
        except OSError as exc:
            if not is_storage_error(exc):
                raise
            outcome = Outcome.NO_SPACE
    if outcome is not Outcome.COMPLETE:
        path.unlink(missing_ok=True)
    return Spooled(path, size, outcome)


def consumed() -> Receive:
    """The ``receive`` the app gets once the body is spooled: an empty, final body (the route
    reads the spool), then nothing more until the server cancels the wait."""
    given = False

    async def receive() -> Message:
        nonlocal given
        if given:
            await anyio.sleep_forever()
        given = True
        return {"type": "http.request", "body": b"", "more_body": False}

    return receive


def remove_spool(path: Path) -> None:
    """Remove a spool file (missing is fine)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
