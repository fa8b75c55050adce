"""``batches list|show`` counts requests as OpenAI's ``request_counts`` has them."""

from __future__ import annotations

from typing import Any

from scheduler.commands.batches import batch_row, describe_batch
from scheduler.commands.common import counts_text


def batch(status: str, total: int, completed: int, failed: int) -> dict[str, Any]:
    """A batch object as the API returns it (the fields these commands read)."""
    return {
        "id": "batch_0123",
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "status": status,
        "created_at": 1_796_000_000,
        "request_counts": {"total": total, "completed": completed, "failed": failed},
    }


def test_a_batch_whose_requests_all_failed_never_reads_as_done() -> None:
    # the batch: completed, 0 of 15 succeeded
    b = batch("completed", 15, 0, 15)
    assert counts_text(b) == "0/15 completed, 15 failed"
    row = batch_row(b)
    assert row.split()[:2] == ["batch_0123", "completed*"]
    assert "15/15" not in row and "0/15 completed, 15 failed" in row
    shown = describe_batch(b)
    assert "status       completed, but every request failed (see the error file)" in shown
    assert "requests     total 15, completed 0, failed 15" in shown


def test_partial_failures_are_counted_and_a_clean_batch_reads_as_complete() -> None:
    partly = describe_batch(batch("completed", 15, 12, 3))
    assert "but 3 of 15 requests failed" in partly
    assert "total 15, completed 12, failed 3" in partly
    clean = batch("completed", 15, 15, 0)
    assert batch_row(clean).split()[1] == "completed"
    assert "status       completed\n" in describe_batch(clean)
    running = describe_batch(batch("in_progress", 15, 4, 1))
    assert "total 15, completed 4, failed 1, pending 10" in running
