"""Helpers for execution tests: submit a batch through the real intake, plan, tick, run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.tick import TickReport, tick
from scheduler.domain import Fleet, SlotSignal
from scheduler.intake.submit import BatchOptions, create_batch
from scheduler.samples import load_sample_fleet
from scheduler.store.db import transaction
from scheduler.store.files import save_file
from scheduler.store.tables import LedgerEntry
from scheduler.store.tenants import create_tenant
from workers.engine_cache import EngineCache
from workers.execute import ShardOutcome
from workers.runtime import WorkerRuntime

T0 = datetime(2026, 11, 22, 1, 30, tzinfo=UTC)


def chat_line(
    custom_id: str, content: str = "Summarise: the grid is clean at night.", **kw: Any
) -> dict[str, Any]:
    """One chat request line for ``tiny-chat``."""
    body: dict[str, Any] = {
        "model": kw.pop("model", "tiny-chat"),
        "messages": [{"role": "user", "content": content}],
        "max_tokens": kw.pop("max_tokens", 6),
    }
    body.update(kw)
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def fixed_signals(
    fleet: Fleet, start: datetime, hours: int = 96
) -> dict[tuple[str, datetime], SlotSignal]:
    """SYNTHETIC signals for the sample fleet, fixed for the test."""
    from scheduler.forecasts.synthetic import synthetic_signals

    return synthetic_signals(fleet, start - timedelta(hours=2), hours)


@dataclass
class Harness:
    """A fleet, a database and a worker runtime wired for in-process execution."""

    settings: Settings
    sessions: sessionmaker[Session]
    fleet: Fleet
    runtime: WorkerRuntime
    signals: Mapping[tuple[str, datetime], SlotSignal]
    sent: list[tuple[str, str, str]] = field(default_factory=list)
    tenant_id: str = ""

    def signals_for(
        self, fleet: Fleet, slots: tuple[datetime, ...], now: datetime
    ) -> Mapping[tuple[str, datetime], SlotSignal]:
        return {k: v for k, v in self.signals.items() if k[1] in set(slots)}

    def send(self, name: str, *args: Any, queue: str) -> None:
        self.sent.append((name, str(args[0]), queue))

    def submit(
        self, lines: list[dict[str, Any]], *, now: datetime = T0, window: str = "24h", tmp: Path
    ) -> str:
        path = tmp / f"in-{len(lines)}-{now.timestamp():.0f}.jsonl"
        path.write_text("".join(json.dumps(x) + "\n" for x in lines))
        with self.sessions() as s:
            self.tenant_id = create_tenant(s, "acme").id
            s.commit()
        with self.sessions() as s:
            f = save_file(
                s,
                self.settings.files_dir,
                path,
                tenant_id=self.tenant_id,
                filename=path.name,
                purpose="batch",
            )
        with self.sessions() as s, s.begin():
            b = create_batch(
                s,
                self.fleet,
                self.tenant_id,
                BatchOptions(
                    input_file_id=f.id, endpoint="/v1/chat/completions", completion_window=window
                ),
                max_requests=self.settings.max_requests_per_batch,
                now=int(now.timestamp()),
            )
            assert b.status == "in_progress", b.errors
            return b.id

    def tick(self, now: datetime, **kw: Any) -> TickReport:
        return tick(
            self.sessions,
            self.settings,
            now,
            self.send,
            fleet=self.fleet,
            signals_for=self.signals_for,
            **kw,
        )

    def drain(self, clock_at: datetime) -> list[ShardOutcome]:
        """Run every sent shard in send order with a clock frozen at ``clock_at``."""
        outcomes = []
        while self.sent:
            _, shard_id, _ = self.sent.pop(0)
            outcomes.append(self.runtime.run(shard_id, clock=lambda: clock_at))
        return outcomes


def make_harness(
    settings: Settings,
    sessions: sessionmaker[Session],
    weights: Path,
    *,
    engine_factory: Any = None,
) -> Harness:
    """A harness on the sample fleet with ``tiny-chat`` (and ``tiny-chat-mini``) at ``weights``."""
    fleet = load_sample_fleet()
    cache = EngineCache(
        engine_factory, weights_override={m.name: str(weights) for m in fleet.models}
    )
    runtime = WorkerRuntime(
        settings=settings, fleet=fleet, sessions=sessions, engine_cache=cache, worker_id="w1"
    )
    signals = fixed_signals(fleet, T0)
    runtime.signal_lookup = lambda site, slot: (
        (signals[(site, slot)], "synthetic") if (site, slot) in signals else None
    )
    return Harness(settings, sessions, fleet, runtime, signals)


def run_planned_slots(h: Harness, batch_id: str, *, steps: int = 12) -> str:
    """Plan at T0, then tick and run slot by slot (no re-plans) until the batch is done.

    Each slot's shards run with a clock 30 minutes into the slot, so an attempt starts and
    ends in the slot it was planned for. Returns the batch's last status.
    """
    from sqlalchemy import func, select

    from scheduler.store.tables import Batch, Shard

    now = T0
    h.tick(now)
    status = "in_progress"
    for _ in range(steps):
        h.tick(now, allow_replan=False)
        h.drain(now + timedelta(minutes=30))
        with h.sessions() as s:
            status = s.get(Batch, batch_id).status  # type: ignore[union-attr]
            nxt = s.scalar(select(func.min(Shard.slot_start)).where(Shard.status == "planned"))
        if status not in ("in_progress", "finalizing") or nxt is None:
            break
        now = max(now, nxt)
    return status


def book_co2(h: Harness, when: datetime, co2_g: float, tenant_id: str = "t") -> None:
    """Book ``co2_g`` of finished work at ``when`` in the ledger (one row each call)."""
    with transaction(h.sessions) as s:
        n = s.query(LedgerEntry).count()
        s.add(
            LedgerEntry(
                batch_id="b-past", shard_id=f"sh-{n}", attempt=1, tenant_id=tenant_id,
                site="es-madrid", pool="cpu", model="tiny-chat", started_at=when,
                ended_at=when + timedelta(minutes=5), requests_done=1, requests_failed=0,
                input_tokens=10, output_tokens=10, gpu_hours=0.1, it_energy_kwh=1.0,
                facility_energy_kwh=1.2, energy_method="estimate", renewable_share=0.0,
                grid_kwh=1.2, carbon_g_per_kwh=co2_g / 1.2, carbon_source="synthetic",
                co2_location_g=co2_g, co2_market_g=None, embodied_co2_g=0.0,
                water_onsite_l=0.0, water_offsite_l=0.0, cost=0.0, planned_energy_kwh=None,
                planned_co2_g=None, planned_water_l=None, planned_cost=None, created_at=when,
            )
        )  # fmt: skip
