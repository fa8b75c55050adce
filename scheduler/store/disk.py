"""Storage faults and free space of the data dir, shared by workers and the API.

An ``OSError`` whose errno says the storage failed (full disk, quota, read-only file system,
I/O error, file too large) is an infrastructure fault: workers give the shard back uncounted
(``workers.storage``), the API answers 507 ``insufficient_storage`` with ``Retry-After``.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

#: errno values that say the storage, not the request, failed.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG})


def is_storage_fault(error: BaseException) -> bool:
    """Whether ``error`` (or its cause) is an ``OSError`` with a storage errno (ENOSPC...)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in STORAGE_ERRNOS:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def free_disk_mb(path: Path) -> float:
    """Free space (MiB, for unprivileged users) of the file system holding ``path``."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free / 2**20
