"""Background validation: batches whose input file was too large to validate inside the request.

``POST /v1/batches`` answers such a batch ``validating`` at once (OpenAI's first status) and
starts ``validate_pending`` after the answer; every dispatcher tick also calls
``validate_all_pending``, so a batch whose API process died mid-validation is still finished.
Two callers on the same batch are safe: the outcome is stored with a compare-and-set from
``validating`` (``store_scan``), the loser stores nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.clock import now_s
from scheduler.domain import BatchStatus, Fleet
from scheduler.intake.submit import scan_batch_file, store_scan
from scheduler.intake.validate import DEFAULT_MAX_TOKENS
from scheduler.store.db import transaction
from scheduler.store.tables import Batch, File

log = logging.getLogger(__name__)


def validate_pending(
    factory: sessionmaker[Session],
    fleet: Fleet,
    batch_id: str,
    *,
    max_requests: int,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
) -> bool:
    """Validate one ``validating`` batch; no session is held while its file is read.

    Returns:
        True when this call moved the batch to ``in_progress`` or ``failed``.
    """
    with factory() as s:
        batch = s.get(Batch, batch_id)
        if batch is None or batch.status != BatchStatus.VALIDATING.value:
            return False
        file = s.get(File, batch.input_file_id)
        path = Path(file.path) if file is not None else None
        s.expunge(batch)
    if path is None or not path.is_file():
        log.error("batch %s: its input file content is missing; it stays validating", batch_id)
        return False
    scan = scan_batch_file(fleet, path, batch, max_requests=max_requests)
    with transaction(factory) as s:
        moved = store_scan(s, batch_id, scan, fleet, default_max_tokens=default_max_tokens)
    log.info("batch %s validated in the background: %s", batch_id, "ok" if scan.ok else "failed")
    return moved


def validate_all_pending(
    factory: sessionmaker[Session], fleet: Fleet, *, max_requests: int, grace_s: float = 30.0
) -> list[str]:
    """Validate every ``validating`` batch created ``grace_s`` ago or earlier, oldest first.

    The grace leaves a fresh batch to the API's own background task (no double work).

    Returns:
        The ids this call moved.
    """
    cutoff = int(now_s() - grace_s)  # against Batch.created_at, a product-clock stamp
    with factory() as s:
        ids = list(
            s.scalars(
                select(Batch.id)
                .where(Batch.status == BatchStatus.VALIDATING.value, Batch.created_at <= cutoff)
                .order_by(Batch.created_at, Batch.id)
            )
        )
    return [b for b in ids if validate_pending(factory, fleet, b, max_requests=max_requests)]
