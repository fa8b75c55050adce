"""Token usage of batches from the ledger: OpenAI's ``batch.usage`` and the models that ran.

Every finished shard attempt books one ledger row with the input and output tokens of its
results (the ``usage`` of its output lines; failed lines count none), and only the attempt
that wins the shard's lease is booked, so the sums equal the sum of the output lines' usage.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scheduler.store.tables import LedgerEntry


def usage_of(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """OpenAI's ``BatchUsage`` shape (no prompt cache and no reasoning tokens here)."""
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def batch_usage(session: Session, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per batch: ``usage``, ``models`` (each model that ran, with its requests and tokens)
    and ``model_ran`` (the model that served the most requests; None before anything ran).

    One query for all ``ids``.
    """
    L = LedgerEntry
    per: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for batch_id, model, done, tok_in, tok_out in session.execute(
        select(
            L.batch_id,
            L.model,
            func.coalesce(func.sum(L.requests_done), 0),
            func.coalesce(func.sum(L.input_tokens), 0),
            func.coalesce(func.sum(L.output_tokens), 0),
        )
        .where(L.batch_id.in_(ids))
        .group_by(L.batch_id, L.model)
        .order_by(L.batch_id, L.model)
    ):
        per[batch_id].append(
            {
                "model": model,
                "requests": int(done),
                "input_tokens": int(tok_in),
                "output_tokens": int(tok_out),
            }
        )
    out: dict[str, dict[str, Any]] = {}
    for batch_id in ids:
        models = per.get(batch_id, [])
        ran = max(models, key=lambda m: (m["requests"], m["model"]), default=None)
        out[batch_id] = {
            "usage": usage_of(
                sum(m["input_tokens"] for m in models), sum(m["output_tokens"] for m in models)
            ),
            "models": models,
            "model_ran": ran["model"] if ran else None,
        }
    return out
