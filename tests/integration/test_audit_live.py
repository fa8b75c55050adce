"""The auditor's script against a live API (issue 19, "Done when").

Scenario: a marginal site, a lifecycle site, a site with a contract and one without, a site
whose provider fails (synthetic fallback), a site with no price, a batch whose every request
failed and a daily budget it breaches. Signals are collected by the service's collector into the
store's cache, rows are booked by the booking functions workers use, and the checks read only
what the API answers (``scripts/audit.py``).
"""

from __future__ import annotations

import copy
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from clock_pin import pinned_clock
from fastapi.testclient import TestClient
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from scheduler.api.app import create_app
from scheduler.config import Settings
from scheduler.dispatch.budget import advance_pacer
from scheduler.dispatch.signals import ledger_signal
from scheduler.domain import Fleet, MeasurementMethod
from scheduler.fleet import load_fleet
from scheduler.forecasts import SqlForecastCache, build_registry, collect_signals
from scheduler.intake.submit import BatchOptions, create_batch
from scheduler.review.audit import no_silent_zero_cost, run_checks
from scheduler.store.db import make_engine, session_factory
from scheduler.store.files import save_file
from scheduler.store.migrate import upgrade
from scheduler.store.tables import ForecastPoint, LedgerEntry
from scheduler.store.tenants import create_api_key, get_tenant
from workers.energy.base import Measurement
from workers.ledger import compute_ledger_values

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from audit import audit  # noqa: E402

pytestmark = pytest.mark.integration

SITES = ("marginal", "lifecycle", "contract", "plain", "failing", "noprice")


def _csv(path: Path, t0: datetime) -> None:
    """24 hours of hourly signals: flat where nothing should move, falling where it should."""
    lines = ["time,site,carbon_g_per_kwh,price_per_kwh,renewable_kw"]
    for h in range(24):
        t = (t0 + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ")
        falling = 500.0 if h <= 8 else 100.0  # dirty until the 08:00 submission slot ends
        for site, carbon in (
            ("marginal", 600.0),
            ("lifecycle", 300.0),
            ("contract", falling),
            ("plain", falling),
            ("noprice", 300.0),
            ("failing", 300.0),  # its price only: its carbon comes from a failing provider
        ):
            lines.append(f"{t},{site},{carbon},0.2,0.0")
    path.write_text("\n".join(lines) + "\n")


def _fleet_yaml(path: Path, csv_path: Path) -> None:
    def carbon(**extra: Any) -> dict[str, Any]:
        return {"provider": "csv", "path": str(csv_path), **extra}

    price = {"provider": "csv", "path": str(csv_path)}
    sources = {
        "marginal": (carbon(factor_type="marginal"), {"average_carbon_g_per_kwh": 250.0}),
        "lifecycle": (
            carbon(factor_type="average-lifecycle"),
            {"average_carbon_g_per_kwh": 200.0},
        ),
        "contract": (carbon(), {"market_factor_g_per_kwh": 20.0}),
        "plain": (carbon(), {}),
        "failing": (
            {
                "provider": "uk-carbon-intensity",
                "base_url": "http://127.0.0.1:9",
                "fallback": "synthetic",
            },
            {},
        ),
        "noprice": (carbon(), {}),
    }
    body = {
        "slot_minutes": 60,
        "carbon_budget": {"g_per_day": 1e-6},
        "sites": [
            {
                "name": name,
                "pue": 1.2,
                "wue_l_per_kwh": 0.5,
                "ewif_l_per_kwh": 2.0,
                **extra,
                "signals": {"carbon": source, "price": price},
                "pools": [{"name": "cpu", "gpu": "CPU", "count": 4}],
            }
            for name, (source, extra) in sources.items()
        ],
        "models": [
            {
                "name": "m",
                "quality": 0.5,
                "profiles": {"CPU": {"prefill_tok_s": 100, "decode_tok_s": 10, "power_w": 50}},
            }
        ],
    }
    path.write_text(yaml.safe_dump(body))


def _batch(
    sessions: sessionmaker[Session], settings: Settings, fleet: Fleet, tenant_id: str, t0: datetime
) -> str:
    line = {
        "custom_id": "r0",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
    }
    path = settings.data_dir / "in.jsonl"
    path.write_text(json.dumps(line) + "\n")
    with sessions() as s:
        f = save_file(
            s, settings.files_dir, path, tenant_id=tenant_id, filename=path.name, purpose="batch"
        )
    with sessions() as s, s.begin():
        opts = BatchOptions(input_file_id=f.id, endpoint="/v1/chat/completions")
        b = create_batch(s, fleet, tenant_id, opts, max_requests=100, now=int(t0.timestamp()))
        assert b.status == "in_progress", b.errors
        return b.id


def _book(
    s: Session,
    fleet: Fleet,
    batch_id: str,
    tenant_id: str,
    site_name: str,
    started: datetime,
    *,
    done: int = 1,
    failed: int = 0,
) -> None:
    """One ledger row, booked as a worker books it (signals, pricing and provenance)."""
    site = fleet.site(site_name)
    slot = started.replace(minute=0, second=0, microsecond=0)
    booking = ledger_signal(s, fleet, site_name, slot, None)
    sig = booking.signal
    v = compute_ledger_values(
        Measurement(0.04, 600.0, MeasurementMethod.ESTIMATED_PROFILE),
        site=site,
        pool=site.pools[0],
        gpus_per_replica=1,
        signal=sig,
        carbon_source=booking.source,
        renewable_allowance_kwh=0.0,
        average_g_per_kwh=booking.average_g_per_kwh,
    )
    s.add(
        LedgerEntry(
            batch_id=batch_id, shard_id=f"{batch_id}-{site_name}", attempt=1,
            tenant_id=tenant_id, site=site_name, pool="cpu", model="m", started_at=started,
            ended_at=started + timedelta(minutes=10), requests_done=done,
            requests_failed=failed, input_tokens=10, output_tokens=8, gpu_hours=v.gpu_hours,
            it_energy_kwh=v.it_energy_kwh, facility_energy_kwh=v.facility_energy_kwh,
            energy_method=v.energy_method, renewable_share=v.renewable_share,
            grid_kwh=v.grid_kwh, carbon_g_per_kwh=v.carbon_g_per_kwh,
            carbon_source=v.carbon_source, co2_location_g=v.co2_location_g,
            co2_market_g=v.co2_market_g, embodied_co2_g=v.embodied_co2_g,
            water_onsite_l=v.water_onsite_l, water_offsite_l=v.water_offsite_l, cost=v.cost,
            carbon_factor=v.carbon_factor,
            signal_fallback=booking.fallback or booking.average_fallback,
            signal_provider=sig.carbon_provider, signal_synthetic=sig.synthetic,
            signal_fallback_reason=sig.fallback_reason, price_fallback=booking.price_fallback,
            co2_marginal_g=v.co2_marginal_g, co2_lifecycle_g=v.co2_lifecycle_g,
            market_basis=v.market_basis, created_at=started,
        )
    )  # fmt: skip


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("audit")
    with pinned_clock() as now:
        t0 = now.replace(hour=8, minute=0)  # submission slot; rows run 08:00-12:00 today
        _csv(tmp / "signals.csv", t0.replace(hour=0))
        _fleet_yaml(tmp / "fleet.yaml", tmp / "signals.csv")
        url = f"sqlite:///{tmp / 'gs.db'}"
        settings = Settings(data_dir=tmp / "data", database_url=url, fleet=tmp / "fleet.yaml")
        settings.data_dir.mkdir(parents=True)
        fleet = load_fleet(tmp / "fleet.yaml")
        engine = make_engine(url)
        upgrade(engine)
        sessions: sessionmaker[Session] = session_factory(engine)
        slots = [t0.replace(hour=0) + timedelta(hours=h) for h in range(24)]
        collect_signals(
            fleet,
            slots,
            registry=build_registry(settings, retries=1, backoff_s=0.01),
            cache=SqlForecastCache(sessions),
            now=t0.replace(hour=0),
        )
        with sessions() as s, s.begin():  # a missing price: nothing cached for that site
            s.execute(
                delete(ForecastPoint).where(
                    ForecastPoint.key.like("noprice|%"), ForecastPoint.signal == "price"
                )
            )
            key = create_api_key(s, "ops", admin=True)
        advance_pacer(sessions, fleet, now)
        with sessions() as s:
            tenant = get_tenant(s, "ops")
            assert tenant is not None
            tenant_id = tenant.id
        ids = {n: _batch(sessions, settings, fleet, tenant_id, t0) for n in (*SITES, "allfailed")}
        with sessions() as s, s.begin():
            later = t0 + timedelta(hours=3, minutes=5)
            for site in ("marginal", "lifecycle", "failing"):
                _book(s, fleet, ids[site], tenant_id, site, later)
            for site in ("contract", "plain"):  # one batch split over a contract and none
                _book(s, fleet, ids["contract"], tenant_id, site, later)
            _book(s, fleet, ids["noprice"], tenant_id, "noprice", t0 + timedelta(minutes=5))
            _book(s, fleet, ids["allfailed"], tenant_id, "plain", later, done=0, failed=1)
        app = create_app(settings)
        with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
            yield client, ids
    engine.dispose()


def test_the_audit_passes_on_a_live_service_with_every_hard_case(live: Any) -> None:
    client, ids = live
    # When the auditor's script runs against the live API
    findings = audit(client, {})
    # Then every check passes
    assert all(f.ok for f in findings), [f for f in findings if not f.ok]
    assert len(findings) == 6
    # and the hard cases are really there: counted, labelled, apart, breached
    report = client.get("/v1/reports/emissions", params={"format": "json"}).json()
    totals = report["totals"]
    assert totals["synthetic_rows"] == 1 and totals["signal_fallbacks"]["fallback-provider"] == 1
    assert totals["lifecycle_rows"] == 1 and totals["marginal_rows"] == 1
    assert totals["price_fallback_rows"] == 1 and report["budget_breaches"]
    assert client.get("/v1/budget").json()["breached"] == ["today"]

    # and the marginal batch saved nothing, the split batch something, the failed one nothing
    def saved(name: str) -> float:
        r = client.get(f"/v1/batches/{ids[name]}/review").json()
        return float(r["asap_counterfactual"]["co2_g"] - r["actual"]["co2_g"])

    assert saved("marginal") == pytest.approx(0.0, abs=1e-12)
    assert saved("contract") > 0
    assert saved("allfailed") == 0.0


def test_the_checks_fail_on_a_silent_zero_cost(live: Any) -> None:
    client, _ = live
    report = client.get("/v1/reports/emissions", params={"format": "json"}).json()
    broken = copy.deepcopy(report)
    row = next(r for r in broken["rows"] if r["price_fallback"] == "no-price")
    row["price_fallback"] = None
    assert no_silent_zero_cost(report).ok and not no_silent_zero_cost(broken).ok
    # and a review claiming another market-based figure is caught
    reviews = {
        r["batch_id"]: client.get(f"/v1/batches/{r['batch_id']}/review").json()
        for r in report["rows"]
    }
    bid = next(iter(reviews))
    reviews[bid]["co2_market_g"] = (reviews[bid]["co2_market_g"] or 0.0) * 1.01 + 1.0
    esrs = client.get("/v1/reports/emissions", params={"format": "esrs"}).json()
    budget = client.get("/v1/budget").json()
    failed = {f.check for f in run_checks(report, esrs, reviews, budget) if not f.ok}
    assert failed == {"one market-based answer"}
