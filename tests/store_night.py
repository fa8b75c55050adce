"""A small night in a real store, at fixed times: a fleet file, batches received through the real
intake, forecast issues kept by the real cache, actual points and a few ledger rows.

Used by the store backtest tests and the ``signal_issued_at`` tests. Nothing depends on the wall
clock: every time is fixed here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.domain import Fleet
from scheduler.forecasts import ACTUAL, FORECAST, SqlForecastCache, cache_key
from scheduler.forecasts.service import ALIASES, site_source
from scheduler.intake.submit import BatchOptions, create_batch
from scheduler.store.files import save_file
from scheduler.store.tables import LedgerEntry
from scheduler.store.tenants import create_tenant

SINCE = datetime(2026, 11, 1, tzinfo=UTC)
UNTIL = SINCE + timedelta(hours=12)
HOUR = timedelta(hours=1)
SITES = ("north", "south", "west")
#: when the forecasts were fetched (each is one issue), and how wrong each was
ISSUES = ((SINCE - timedelta(minutes=10), 0.25), (SINCE + timedelta(hours=3, minutes=20), 0.1))
#: batches: (submitted at, requests)
ARRIVALS = (
    (SINCE + timedelta(minutes=10), 40),
    (SINCE + timedelta(hours=2, minutes=30), 30),
    (SINCE + timedelta(hours=5, minutes=45), 50),
)
#: (site, slot) whose actual carbon only the ledger knows (no actual point cached)
LEDGER_ONLY = (("west", SINCE + 4 * HOUR), ("west", SINCE + 5 * HOUR))
LEDGER_PRICE = 0.31


def fleet_document(carbon: dict[str, Any] | None = None) -> dict[str, Any]:
    """Three one-CPU sites, one chat model; carbon from ``carbon`` (default: synthetic)."""
    source = carbon or {"provider": "synthetic"}
    return {
        "slot_minutes": 60,
        "defaults": {"objectives": ["carbon", "cost", "delay"], "tolerances": [0.01, 0, 0]},
        "sites": [
            {
                "name": name,
                "pue": 1.1 + 0.05 * i,
                "wue_l_per_kwh": 0.3,
                "ewif_l_per_kwh": 1.5,
                "signals": {"carbon": source, "price": {"provider": "constant", "value": 0.2}},
                "pools": [{"name": "cpu", "gpu": "CPU", "count": 1, "embodied_g_per_gpu_hour": 2}],
            }
            for i, name in enumerate(SITES)
        ],
        "models": [
            {
                "name": "tiny-chat",
                "quality": 0.6,
                "expected_output_fraction": 0.6,
                "profiles": {
                    "CPU": {"gpus": 1, "prefill_tok_s": 20, "decode_tok_s": 2, "power_w": 35}
                },
            }
        ],
    }


def write_fleet(folder: Path, carbon: dict[str, Any] | None = None) -> Path:
    """Write the fleet as ``fleet.yaml`` (JSON is YAML) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fleet.yaml"
    path.write_text(json.dumps(fleet_document(carbon), indent=2))
    return path


def actual_carbon(site: str, t: datetime) -> float:
    """What the night really was (g/kWh): a different base and evening dip per site."""
    base = {"north": 320.0, "south": 180.0, "west": 240.0}[site]
    return base + 70.0 * math.cos(2 * math.pi * (t.hour + 3 * SITES.index(site)) / 12)


def source_key(fleet: Fleet, site: str, kind: str) -> tuple[str, str]:
    """The (provider, key) the service caches a site's signal under."""
    source = site_source(fleet.site(site), kind)
    assert source is not None
    return ALIASES.get(source.provider, source.provider), cache_key(site, source.options)


def seed_issue(
    sessions: sessionmaker[Session], fleet: Fleet, fetched: datetime, error: float, hours: int = 24
) -> None:
    """One fetch of every site's carbon (hourly, ``error`` off the actuals) and tariff."""
    cache = SqlForecastCache(sessions)
    first = fetched.replace(minute=0, second=0, microsecond=0)
    for site in SITES:
        values = {
            first + i * HOUR: actual_carbon(site, first + i * HOUR)
            * (1 + error * math.sin(i + SITES.index(site)))
            for i in range(hours)
        }
        cache.upsert(*source_key(fleet, site, "carbon"), "carbon", FORECAST, values, fetched)
        # the constant provider writes one point per fetch, held over the horizon
        cache.upsert(*source_key(fleet, site, "price"), "price", FORECAST, {first: 0.2}, fetched)


def seed_actuals(sessions: sessionmaker[Session], fleet: Fleet) -> None:
    """Actual carbon points for every site and slot of the night but ``LEDGER_ONLY``."""
    cache = SqlForecastCache(sessions)
    slots = [SINCE + i * HOUR for i in range(int((UNTIL - SINCE) / HOUR))]
    for site in SITES:
        values = {t: actual_carbon(site, t) for t in slots if (site, t) not in LEDGER_ONLY}
        provider, key = source_key(fleet, site, "carbon")
        cache.upsert(provider, key, "carbon", ACTUAL, values, UNTIL + HOUR)


def seed_ledger(sessions: sessionmaker[Session]) -> None:
    """One ledger row per ``LEDGER_ONLY`` slot, booked with the real intensity and a price."""
    with sessions() as s, s.begin():
        for n, (site, slot) in enumerate(LEDGER_ONLY):
            grid = 0.02
            s.add(
                LedgerEntry(
                    batch_id="batch_seed",
                    shard_id=f"shard_seed_{n}",
                    attempt=1,
                    tenant_id="tenant_seed",
                    site=site,
                    pool="cpu",
                    model="tiny-chat",
                    started_at=slot + timedelta(minutes=5),
                    ended_at=slot + timedelta(minutes=25),
                    requests_done=1,
                    requests_failed=0,
                    input_tokens=10,
                    output_tokens=4,
                    gpu_hours=0.3,
                    it_energy_kwh=0.0105,
                    facility_energy_kwh=grid,
                    energy_method="estimated",
                    renewable_share=0.0,
                    grid_kwh=grid,
                    carbon_g_per_kwh=actual_carbon(site, slot),
                    carbon_source="actual",
                    co2_location_g=grid * actual_carbon(site, slot),
                    embodied_co2_g=0.6,
                    water_onsite_l=0.003,
                    water_offsite_l=0.03,
                    cost=grid * LEDGER_PRICE,
                    created_at=slot + timedelta(minutes=25),
                )
            )


def submit(
    sessions: sessionmaker[Session],
    settings: Settings,
    fleet: Fleet,
    at: datetime,
    requests: int,
    folder: Path,
) -> str:
    """Create a batch of ``requests`` chat lines through the real intake, received at ``at``."""
    path = folder / f"in-{int(at.timestamp())}.jsonl"
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "tiny-chat",
                "messages": [{"role": "user", "content": "Summarise: the grid is clean."}],
                "max_tokens": 6,
            },
        }
        for i in range(requests)
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with sessions() as s, s.begin():
        tenant = create_tenant(s, "acme").id
    with sessions() as s:
        f = save_file(
            s, settings.files_dir, path, tenant_id=tenant, filename=path.name, purpose="batch"
        )
    with sessions() as s, s.begin():
        b = create_batch(
            s,
            fleet,
            tenant,
            BatchOptions(input_file_id=f.id, endpoint="/v1/chat/completions"),
            max_requests=settings.max_requests_per_batch,
            now=int(at.timestamp()),
        )
        assert b.status == "in_progress", b.errors
        return b.id


@dataclass
class Night:
    """What ``seed_night`` wrote."""

    batch_ids: list[str] = field(default_factory=list)


def seed_night(
    sessions: sessionmaker[Session],
    settings: Settings,
    fleet: Fleet,
    folder: Path,
    *,
    issues: bool = True,
) -> Night:
    """Batches, (optionally) two forecast issues, actual points and the ledger rows."""
    night = Night()
    for at, n in ARRIVALS:
        night.batch_ids.append(submit(sessions, settings, fleet, at, n, folder))
    if issues:
        for fetched, error in ISSUES:
            seed_issue(sessions, fleet, fetched, error)
    seed_actuals(sessions, fleet)
    seed_ledger(sessions)
    return night
