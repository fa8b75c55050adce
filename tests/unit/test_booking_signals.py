"""Signals for booking: actual, then the plan's, then forecast, persistence, configured factors."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from scheduler.dispatch.signals import ZONE_AVERAGE_G_PER_KWH, ledger_signal
from scheduler.domain import Fleet, SignalSource
from scheduler.forecasts.base import ACTUAL, CARBON, FORECAST, cache_key
from scheduler.forecasts.cache import SqlForecastCache
from scheduler.samples import load_sample_fleet
from scheduler.store.tables import AssignmentRecord

SLOT = datetime(2026, 11, 22, 9, tzinfo=UTC)
SITE = "de-frankfurt"  # carbon from the synthetic provider


def _fleet(**site_changes: object) -> Fleet:
    fleet = load_sample_fleet()
    sites = tuple(
        dataclasses.replace(s, **site_changes) if s.name == SITE else s for s in fleet.sites
    )
    return dataclasses.replace(fleet, sites=sites)


def _cache(sessions: sessionmaker[Session], fleet: Fleet, kind: str, t: datetime, v: float) -> None:
    source = fleet.site(SITE).signals["carbon"]
    key = cache_key(SITE, source.options)
    SqlForecastCache(sessions).upsert(source.provider, key, CARBON, kind, {t: v}, t)


def _assignment() -> AssignmentRecord:
    return AssignmentRecord(
        site=SITE,
        pool="cpu",
        model="tiny-chat",
        slot_start=SLOT,
        requests=1,
        input_tokens=1.0,
        output_tokens=1.0,
        gpu_hours=0.1,
        energy_kwh=0.1,
        co2_g=1.0,
        cost=0.01,
        water_l=0.0,
        carbon_g_per_kwh=222.0,
        price_per_kwh=0.2,
        renewable_kw=0.5,
        grid_kwh=0.05,
    )


def test_nothing_known_books_the_zone_average_labelled_never_zero(
    sessions: sessionmaker[Session],
) -> None:
    # Given no cached signal, no plan and no configured factor for the site
    with sessions() as s:
        b = ledger_signal(s, _fleet(), SITE, SLOT, None)
    # Then the row is booked with the zone average, and says it is a fallback
    assert b.signal.carbon_g_per_kwh == ZONE_AVERAGE_G_PER_KWH > 0
    assert (b.source, b.fallback) == ("zone-average", "zone-average")


def test_configured_site_factor_comes_before_the_zone_average(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as s:
        b = ledger_signal(s, _fleet(average_carbon_g_per_kwh=321.0), SITE, SLOT, None)
    assert (b.signal.carbon_g_per_kwh, b.fallback) == (321.0, "site-factor")


def test_persistence_takes_the_same_hour_of_an_earlier_day(
    sessions: sessionmaker[Session],
) -> None:
    # Given only yesterday's value for 09:00 in the cache
    fleet = _fleet()
    _cache(sessions, fleet, FORECAST, SLOT - timedelta(days=1), 250.0)
    with sessions() as s:
        b = ledger_signal(s, fleet, SITE, SLOT, None)
    assert (b.signal.carbon_g_per_kwh, b.source, b.fallback) == (
        250.0,
        "persistence",
        "persistence",
    )


def test_the_plans_signal_is_used_in_its_slot_and_the_actual_replaces_it(
    sessions: sessionmaker[Session],
) -> None:
    fleet = _fleet()
    _cache(sessions, fleet, FORECAST, SLOT, 260.0)
    with sessions() as s:
        planned = ledger_signal(s, fleet, SITE, SLOT, _assignment())
    # Then in its planned slot the plan's own signal is booked (not a newer forecast)
    assert (planned.signal.carbon_g_per_kwh, planned.source, planned.fallback) == (
        222.0,
        "plan",
        None,
    )
    assert planned.signal.renewable_kw == 0.5
    # And once the actual is known it replaces the plan's figure
    _cache(sessions, fleet, ACTUAL, SLOT, 199.0)
    with sessions() as s:
        actual = ledger_signal(s, fleet, SITE, SLOT, _assignment())
    assert (actual.signal.carbon_g_per_kwh, actual.source) == (199.0, "actual")
    # And in another slot the plan's figure does not apply: that slot's forecast does
    with sessions() as s:
        other = ledger_signal(s, fleet, SITE, SLOT + timedelta(days=1), _assignment())
    assert other.source in ("persistence", "forecast")


def test_a_marginal_source_books_an_average_factor_for_scope_2(
    sessions: sessionmaker[Session],
) -> None:
    # Given a site whose carbon signal is configured as marginal rates, and an average factor
    fleet = _fleet(
        signals={
            "carbon": SignalSource("synthetic", {"factor_type": "marginal"}),
            "price": SignalSource("synthetic"),
        },
        average_carbon_g_per_kwh=300.0,
    )
    source = fleet.site(SITE).signals["carbon"]
    SqlForecastCache(sessions).upsert(
        "synthetic", cache_key(SITE, source.options), CARBON, ACTUAL, {SLOT: 650.0}, SLOT
    )
    with sessions() as s:
        b = ledger_signal(s, fleet, SITE, SLOT, None)
    # Then the marginal rate is kept as such and scope 2 gets the average factor, labelled
    assert b.signal.carbon_factor == "marginal" and b.signal.carbon_g_per_kwh == 650.0
    assert (b.average_g_per_kwh, b.average_fallback) == (300.0, "site-factor")


@pytest.mark.parametrize(
    ("provider", "options", "factor"),
    [
        ("watttime", {}, "marginal"),
        ("electricitymaps", {}, "average-direct"),
        ("electricitymaps", {"emission_factor_type": "lifecycle"}, "average-lifecycle"),
        ("uk-carbon-intensity", {}, "average-direct"),
        ("csv", {"factor_type": "marginal"}, "marginal"),
    ],
)
def test_every_carbon_source_says_its_factor_type(
    provider: str, options: dict[str, str], factor: str
) -> None:
    from scheduler.forecasts.base import carbon_factor_of

    assert carbon_factor_of(provider, options) == factor


def _london_like() -> Fleet:
    """A site whose configured provider has nothing cached and whose fallback is synthetic."""
    return _fleet(
        signals={
            "carbon": SignalSource(
                "uk-carbon-intensity", {"region": "London", "fallback": "synthetic"}
            ),
            "price": SignalSource("constant", {"value": 0.2}),
        }
    )


def test_a_shard_outside_its_slot_finds_the_fallback_providers_signal_labelled(
    sessions: sessionmaker[Session],
) -> None:
    # Given the planner's signal for 09:00 came from the synthetic fallback (the UK API was
    # unreachable), so only the synthetic provider's forecast is cached
    fleet = _london_like()
    SqlForecastCache(sessions).upsert(
        "synthetic", cache_key(SITE, {}), CARBON, FORECAST, {SLOT: 176.0}, SLOT
    )
    # When a shard planned elsewhere runs at 09:00
    with sessions() as s:
        b = ledger_signal(s, fleet, SITE, SLOT, None)
    # Then it books what the planner saw (not the zone average), labelled as a synthetic
    # fallback with the reason
    assert b.signal.carbon_g_per_kwh == 176.0 != ZONE_AVERAGE_G_PER_KWH
    assert (b.source, b.fallback) == ("forecast", "fallback-provider")
    assert b.signal.synthetic and b.signal.carbon_provider == "synthetic"
    assert b.signal.fallback_reason is not None
    assert "uk-carbon-intensity" in b.signal.fallback_reason


def test_the_plans_provenance_travels_to_the_booking(sessions: sessionmaker[Session]) -> None:
    # Given a plan whose 09:00 signal was a synthetic fallback
    a = _assignment()
    a.signal_provider = "synthetic"
    a.signal_synthetic = True
    a.signal_fallback_reason = "fallback-provider: uk-carbon-intensity failed; fallback synthetic"
    # When the shard runs in its planned slot
    with sessions() as s:
        b = ledger_signal(s, _london_like(), SITE, SLOT, a)
    # Then the row books the plan's figure and says it was a synthetic fallback
    assert (b.signal.carbon_g_per_kwh, b.source, b.fallback) == (222.0, "plan", "fallback-provider")
    assert b.signal.synthetic and b.signal.carbon_provider == "synthetic"


def test_no_price_known_is_labelled_not_a_silent_zero(sessions: sessionmaker[Session]) -> None:
    # Given nothing cached for the slot and no plan
    with sessions() as s:
        b = ledger_signal(s, _fleet(), SITE, SLOT, None)
    # Then the cost basis says no price was known
    assert b.signal.price_per_kwh == 0.0 and b.price_fallback == "no-price"


def test_plan_notes_name_each_site_planned_on_synthetic_or_fallback_carbon() -> None:
    from scheduler.dispatch.signals import signal_notes
    from scheduler.domain import SlotSignal

    # Given two slots of a site whose UK API failed (synthetic fallback) and one first-hand site
    why = "fallback-provider: uk-carbon-intensity: timed out; fallback provider synthetic"
    fallback = SlotSignal(SLOT, "gb-london", 176.0, 0.1, 0.0, synthetic=True, fallback_reason=why)
    fallback = dataclasses.replace(fallback, carbon_provider="synthetic")
    first_hand = SlotSignal(SLOT, "se-lulea", 30.0, 0.1, 0.0, carbon_provider="csv")
    signals = {
        ("gb-london", SLOT): fallback,
        ("gb-london", SLOT + timedelta(hours=1)): dataclasses.replace(fallback),
        ("se-lulea", SLOT): first_hand,
    }
    # When the plan's notes are written
    notes = signal_notes(signals)
    # Then one note names the site, the provider, that it is synthetic, how many slots and why
    assert notes == [
        f"site gb-london: 2 of 2 slot(s) planned on SYNTHETIC carbon from synthetic ({why})"
    ]
