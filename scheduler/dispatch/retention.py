"""Retention sweep (one call per dispatcher tick): expired files, per-shard files, crash leftovers,
old forecast issues.

1. Files whose ``expires_at`` has passed (``expires_after`` on upload, 30 days by default for
   ``batch`` inputs, ``output_expires_after`` on a batch's output and error files) lose their
   content and are marked ``deleted`` with status ``expired``: they leave ``GET /v1/files`` and
   answer 404 saying they expired. An input file that a batch still running needs is kept
   until that batch has finished.
2. Per-shard result files under ``data_dir/shards`` (every attempt's output and error JSONL) are
   removed once their batch is finalised (terminal for ``FINALISED_GRACE_S``, so a batch
   cancelled between a tick's finalizer and its sweep keeps them until its files are written):
   the batch's output and error files hold the results.
3. Crash leftovers (``files/.tmp/*.part`` of interrupted uploads, ``shards/.*.tmp`` of
   interrupted shard writes) older than ``part_file_max_age_s`` are removed (aged by their
   modification time on the file system's clock, ``clock.filesystem_time``).
4. Forecast issues (``forecast_issues``) issued more than ``forecast_issue_retention_days``
   ago are deleted; ``forecast_points`` (the newest value per time) is kept.
5. Multipart uploads (``/v1/uploads``) not completed within their hour are marked ``expired``
   and the parts of finished uploads are removed (``sweep_uploads``).
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from scheduler import clock
from scheduler.config import Settings
from scheduler.domain import TERMINAL_BATCH_STATUSES
from scheduler.forecasts.issues import delete_issues_before
from scheduler.store.db import transaction
from scheduler.store.files import TMP_DIR, file_in_use
from scheduler.store.tables import Batch, File, Shard
from scheduler.store.uploads import sweep_uploads

log = logging.getLogger(__name__)

EXPIRED_STATUS = "expired"
# A batch's per-shard files are removed this long after it became terminal: its finalizer (the
# same or the next tick) has long written the output and error files by then.
FINALISED_GRACE_S = 300
_SHARD_FILE = re.compile(r"^([^.].*)\.a\d+\.(?:out|err)\.jsonl$")  # workers.execute.shard_paths
_CHUNK = 500


@dataclass
class RetentionReport:
    """What one sweep removed."""

    files_expired: list[str] = field(default_factory=list)
    shard_files_removed: int = 0
    leftovers_removed: int = 0
    forecast_issues_removed: int = 0
    upload_parts_removed: int = 0


def sweep_retention(
    factory: sessionmaker[Session], settings: Settings, *, now_s: float | None = None
) -> RetentionReport:
    """Run the four steps of the module docstring; safe to call at any period.

    Args:
        factory: session factory.
        settings: ``data_dir``, ``files_dir``, ``part_file_max_age_s`` and
            ``forecast_issue_retention_days``.
        now_s: Unix seconds of the product clock (default: ``clock.now_s``), compared with the
            stored stamps (expiry, batch end, forecast issue). Crash leftovers are aged by
            their modification time against ``clock.filesystem_time`` instead.
    """
    now = clock.now_utc().timestamp() if now_s is None else now_s
    report = RetentionReport()
    report.files_expired = _expire_files(factory, int(now))
    report.shard_files_removed = _remove_shard_files(
        factory, settings.data_dir / "shards", int(now) - FINALISED_GRACE_S
    )
    report.leftovers_removed = _remove_leftovers(
        settings, clock.filesystem_time() - settings.part_file_max_age_s
    )
    cutoff = datetime.fromtimestamp(now, UTC) - timedelta(
        days=settings.forecast_issue_retention_days
    )
    with transaction(factory) as s:
        report.forecast_issues_removed = delete_issues_before(s, cutoff)
    with factory() as s:  # expired multipart uploads (/v1/uploads) and their parts
        report.upload_parts_removed = sweep_uploads(s, settings.files_dir)
    if (
        report.files_expired
        or report.shard_files_removed
        or report.leftovers_removed
        or report.forecast_issues_removed
        or report.upload_parts_removed
    ):
        log.info(
            "retention: %d files expired, %d shard files, %d leftovers and %d forecast issues "
            "removed",
            len(report.files_expired),
            report.shard_files_removed,
            report.leftovers_removed,
            report.forecast_issues_removed,
        )
    return report


def _expire_files(factory: sessionmaker[Session], now: int) -> list[str]:
    expired: list[str] = []
    with transaction(factory) as s:
        due = list(
            s.scalars(
                select(File).where(
                    File.deleted.is_(False), File.expires_at.is_not(None), File.expires_at <= now
                )
            )
        )
        for f in due:
            if file_in_use(s, f.id):
                continue  # a running batch still reads it; expires once that batch finished
            s.execute(
                update(File)
                .where(File.id == f.id, File.deleted.is_(False))
                .values(deleted=True, status=EXPIRED_STATUS)
            )
            expired.append(f.id)
        paths = [Path(f.path) for f in due if f.id in set(expired)]
    for p in paths:  # after the commit: a row never points at removed content while visible
        p.unlink(missing_ok=True)
    return expired


def _remove_shard_files(factory: sessionmaker[Session], shards_dir: Path, ended_by: int) -> int:
    if not shards_dir.is_dir():
        return 0
    by_shard: dict[str, list[Path]] = {}
    for p in shards_dir.iterdir():
        m = _SHARD_FILE.match(p.name)
        if m:
            by_shard.setdefault(m.group(1), []).append(p)
    if not by_shard:
        return 0
    finished = [s.value for s in TERMINAL_BATCH_STATUSES]
    removable: list[str] = []
    ids = sorted(by_shard)
    with factory() as s:
        for i in range(0, len(ids), _CHUNK):
            removable += s.scalars(
                select(Shard.id)
                .join(Batch, Batch.id == Shard.batch_id)
                .where(
                    Shard.id.in_(ids[i : i + _CHUNK]),
                    Batch.status.in_(finished),
                    func.coalesce(
                        Batch.completed_at, Batch.cancelled_at, Batch.expired_at, Batch.failed_at
                    )
                    <= ended_by,
                )
            )
    if removable:
        with transaction(factory) as s:
            for i in range(0, len(removable), _CHUNK):
                s.execute(
                    update(Shard)
                    .where(Shard.id.in_(removable[i : i + _CHUNK]))
                    .values(output_path=None, error_path=None)
                )
    n = 0
    for shard_id in removable:
        for p in by_shard[shard_id]:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
    return n


def _remove_leftovers(settings: Settings, cutoff: float) -> int:
    candidates = [
        *(settings.files_dir / TMP_DIR).glob("*.part"),
        *(settings.data_dir / "shards").glob(".*.tmp"),
    ]
    n = 0
    for p in candidates:
        with contextlib.suppress(FileNotFoundError):
            if p.is_file() and p.stat().st_mtime <= cutoff:
                p.unlink()
                n += 1
    return n
