"""Shared test data: store rows and keys built one way for every test (issue 18).

Tests that need a tenant with a batch and a queued shard, a ledger row from computed values, or
API keys of fresh tenants call these instead of writing the rows out again.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from scheduler.store.db import make_engine, session_factory, transaction
from scheduler.store.migrate import upgrade
from scheduler.store.tables import Batch, BatchRequest, File, LedgerEntry, Shard, Tenant
from scheduler.store.tenants import create_api_key

#: The ledger columns that come straight from a ``LedgerValues`` (workers.ledger).
LEDGER_VALUE_FIELDS = (
    "gpu_hours",
    "it_energy_kwh",
    "facility_energy_kwh",
    "energy_method",
    "renewable_share",
    "grid_kwh",
    "carbon_g_per_kwh",
    "carbon_source",
    "co2_location_g",
    "co2_market_g",
    "embodied_co2_g",
    "water_onsite_l",
    "water_offsite_l",
    "cost",
    "carbon_factor",
)


def one_queued_shard(
    sessions: sessionmaker[Session],
    now: datetime,
    *,
    requests: int = 1,
    request_rows: bool = False,
    **shard: Any,
) -> None:
    """Tenant ``t1``, file ``f1``, batch ``b1`` in progress, shard ``s1`` queued at ``now``.

    ``requests`` is the batch's and the shard's request count; ``request_rows`` adds one
    ``BatchRequest`` per request (``r0``, ``r1``, ...) on the shard; ``shard`` overrides the
    shard's columns (e.g. ``planned_energy_kwh``).
    """
    with transaction(sessions) as s:
        s.add(Tenant(id="t1", name="t1", created_at=now))
        s.flush()
        s.add(
            File(
                id="f1",
                tenant_id="t1",
                filename="in",
                purpose="batch",
                bytes=0,
                sha256="",
                path="/dev/null",
                created_at=0,
            )
        )
        s.flush()
        s.add(
            Batch(
                id="b1",
                tenant_id="t1",
                endpoint="/v1/chat/completions",
                input_file_id="f1",
                completion_window="24h",
                status="in_progress",
                created_at=0,
                deadline=now + timedelta(days=1),
                request_total=requests,
            )
        )
        s.flush()
        columns: dict[str, Any] = {
            "id": "s1",
            "batch_id": "b1",
            "part_id": "b1~m",
            "site": "x",
            "pool": "p",
            "model": "m",
            "slot_start": now,
            "status": "queued",
            "request_count": requests,
            "attempts": 0,
            "created_at": now,
            **shard,
        }
        s.add(Shard(**columns))
        s.flush()
        if request_rows:
            for i in range(requests):
                s.add(
                    BatchRequest(
                        batch_id="b1",
                        part_id="b1~m",
                        line_no=i + 1,
                        custom_id=f"r{i}",
                        byte_offset=0,
                        byte_len=0,
                        input_tokens_est=1,
                        max_tokens=8,
                        shard_id="s1",
                    )
                )


def ledger_entry(values: Any, **columns: Any) -> LedgerEntry:
    """A ``LedgerEntry`` carrying ``values`` (a ``LedgerValues``) and the given columns."""
    from_values = {name: getattr(values, name) for name in LEDGER_VALUE_FIELDS}
    return LedgerEntry(**{**from_values, **columns})


def tenant_keys(database_url: str, *names: str, admin: bool = False) -> list[str]:
    """One API key per tenant name (each name made unique with a suffix), in order, on the
    database at ``database_url`` (migrated first: a no-op when it already is)."""
    suffix = uuid.uuid4().hex[:8]
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        with session_factory(engine)() as s:
            keys = [create_api_key(s, f"{name}-{suffix}", admin=admin) for name in names]
            s.commit()
    finally:
        engine.dispose()
    return keys
