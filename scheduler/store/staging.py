"""Content written chunk by chunk to a temporary file under ``files_dir/.tmp``, hashed and
counted on the way, not yet visible (``files.add_file`` moves it into place)."""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from scheduler.errors import LimitExceeded

TMP_DIR = ".tmp"


@dataclass(frozen=True, slots=True)
class StagedContent:
    """Content written to a temporary path, not yet visible (see ``files.add_file``)."""

    tmp_path: Path
    bytes: int
    sha256: str


class Stager:
    """Write content incrementally: ``write`` chunks, then ``finish`` (fsynced) or ``discard``.

    Raises (from ``write``):
        LimitExceeded: more than ``max_bytes`` were written (call ``discard``).
    """

    def __init__(self, files_dir: Path, max_bytes: int | None = None) -> None:
        tmp_dir = files_dir / TMP_DIR
        tmp_dir.mkdir(parents=True, exist_ok=True)
        self.path = tmp_dir / f"{uuid.uuid4().hex}.part"
        self.max_bytes = max_bytes
        self.size = 0
        self._digest = hashlib.sha256()
        self._out = self.path.open("wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise LimitExceeded(
                f"file is larger than the limit of {self.max_bytes} bytes "
                f"(GRIDSHIFT_MAX_FILE_BYTES); split the requests into several files"
            )
        self._digest.update(chunk)
        self._out.write(chunk)

    def finish(self) -> StagedContent:
        """Flush, fsync and close; the content is ready for ``add_file``."""
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        return StagedContent(tmp_path=self.path, bytes=self.size, sha256=self._digest.hexdigest())

    def discard(self) -> None:
        """Close and remove what was written (nothing is left behind)."""
        self._out.close()
        self.path.unlink(missing_ok=True)
