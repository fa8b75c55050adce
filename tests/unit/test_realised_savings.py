"""Realised savings compare like with like: same actuals, factor type, resolution, renewables,
and only requests that succeeded (issue 19)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from scheduler.dispatch.signals import ledger_signal
from scheduler.domain import Fleet, MeasurementMethod, SignalSource
from scheduler.forecasts.base import ACTUAL, CARBON, PRICE, SOLAR, cache_key
from scheduler.forecasts.cache import SqlForecastCache
from scheduler.pricing import energy_from_tokens
from scheduler.review.batch_review import asap_counterfactual
from scheduler.review.realised import asap_model, realised, realised_split
from scheduler.samples import load_sample_fleet
from scheduler.store.tables import LedgerEntry
from tests.factories import ledger_entry
from workers.energy.base import Measurement
from workers.ledger import compute_ledger_values

SITE = "de-frankfurt"
SUBMITTED = datetime(2026, 11, 22, 18, 5, tzinfo=UTC)  # 18:00 slot: no sun
RAN = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # the next day at noon: sun


def _fleet(carbon: SignalSource | None = None, **changes: object) -> Fleet:
    fleet = load_sample_fleet()
    signals = dict(fleet.site(SITE).signals)
    if carbon is not None:
        signals["carbon"] = carbon
    sites = tuple(
        dataclasses.replace(s, signals=signals, **changes) if s.name == SITE else s
        for s in fleet.sites
    )
    return dataclasses.replace(fleet, sites=sites)


def _cache(
    sessions: sessionmaker[Session], fleet: Fleet, kind: str, points: dict[datetime, float]
) -> None:
    source = fleet.site(SITE).signals[kind]
    key = cache_key(SITE, source.options)
    SqlForecastCache(sessions).upsert(source.provider, key, kind, ACTUAL, points, SUBMITTED)


def _book(
    sessions: sessionmaker[Session],
    fleet: Fleet,
    started: datetime,
    *,
    done: int = 10,
    failed: int = 0,
    seconds: float = 600.0,
) -> LedgerEntry:
    """A ledger row booked exactly as a worker books one (ledger_signal + compute_ledger_values)."""
    site = fleet.site(SITE)
    slot = started.replace(minute=0, second=0, microsecond=0)
    with sessions() as s:
        booking = ledger_signal(s, fleet, SITE, slot, None)
    v = compute_ledger_values(
        Measurement(0.05, seconds, MeasurementMethod.ESTIMATED_PROFILE),
        site=site,
        pool=site.pools[0],
        gpus_per_replica=1,
        signal=booking.signal,
        carbon_source=booking.source,
        renewable_allowance_kwh=booking.signal.renewable_kw * seconds / 3600.0,
        average_g_per_kwh=booking.average_g_per_kwh,
    )
    return ledger_entry(
        v,
        batch_id="b",
        shard_id="s",
        attempt=1,
        tenant_id="t",
        site=SITE,
        pool="cpu",
        model="tiny-chat",
        started_at=started,
        ended_at=started + timedelta(seconds=seconds),
        requests_done=done,
        requests_failed=failed,
        input_tokens=100,
        output_tokens=100,
        co2_marginal_g=v.co2_marginal_g,
        created_at=started,
    )


def _hours(first: datetime, values: list[float]) -> dict[datetime, float]:
    return {first + timedelta(minutes=15 * i): v for i, v in enumerate(values)}


def test_a_marginal_site_run_later_saves_nothing(sessions: sessionmaker[Session]) -> None:
    # Given a site whose signal is a flat 600 g/kWh marginal rate, with an average factor of 250
    fleet = _fleet(
        SignalSource("synthetic", {"factor_type": "marginal"}), average_carbon_g_per_kwh=250.0
    )
    slot0 = SUBMITTED.replace(minute=0)
    ran = slot0 + timedelta(hours=3)
    _cache(sessions, fleet, CARBON, {slot0: 600.0, ran: 600.0})
    _cache(sessions, fleet, PRICE, {slot0: 0.2, ran: 0.2})
    row = _book(sessions, fleet, ran)
    assert row.co2_location_g == pytest.approx(row.grid_kwh * 250.0)
    # When its realised savings are computed against running at once
    with sessions() as s:
        booked, counter, _ = realised(s, fleet, [row], SUBMITTED)
    # Then nothing moved, so nothing is saved (no 600-vs-250 comparison)
    assert counter.co2_g == pytest.approx(booked.co2_g, rel=1e-12)


def test_a_batch_whose_every_request_failed_is_credited_nothing(
    sessions: sessionmaker[Session],
) -> None:
    # Given a batch that ran in a cleaner slot than its submission slot, but every request failed
    fleet = _fleet()
    slot0 = SUBMITTED.replace(minute=0)
    ran = slot0 + timedelta(hours=4)
    _cache(sessions, fleet, CARBON, {slot0: 500.0, ran: 100.0})
    _cache(sessions, fleet, PRICE, {slot0: 0.3, ran: 0.1})
    failed = _book(sessions, fleet, ran, done=0, failed=10)
    half = _book(sessions, fleet, ran, done=5, failed=5)
    with sessions() as s:
        booked, counter, _ = realised(s, fleet, [failed], SUBMITTED)
        booked_half, counter_half, _ = realised(s, fleet, [half], SUBMITTED)
    # Then the failed batch saves nothing, and a half-failed one half of what it would
    assert counter.co2_g == booked.co2_g
    full = booked_half.grid_kwh * (500.0 - 100.0)
    assert counter_half.co2_g - booked_half.co2_g == pytest.approx(full / 2, rel=1e-9)


def test_run_at_once_saves_nothing_at_the_slots_resolution(sessions: sessionmaker[Session]) -> None:
    # Given 15-minute carbon points within the submission slot, and a batch run in that slot
    fleet = _fleet()
    slot0 = SUBMITTED.replace(minute=0)
    _cache(sessions, fleet, CARBON, _hours(slot0, [300.0, 320.0, 340.0, 360.0]))
    _cache(sessions, fleet, PRICE, {slot0: 0.2})
    row = _book(sessions, fleet, SUBMITTED + timedelta(minutes=20))
    # When compared with running at once
    with sessions() as s:
        booked, counter, intensity = realised(s, fleet, [row], SUBMITTED)
    # Then the counterfactual is priced at the slot's mean, as the booking was: zero savings
    assert intensity[SITE] == pytest.approx(330.0)
    assert counter.co2_g == pytest.approx(booked.co2_g, rel=1e-12)


def test_the_counterfactual_has_its_own_renewables_none_at_night(
    sessions: sessionmaker[Session],
) -> None:
    # Given the same carbon at 18:00 and at noon, with panels producing only at noon
    fleet = _fleet()
    slot0 = SUBMITTED.replace(minute=0)
    _cache(sessions, fleet, CARBON, {slot0: 300.0, RAN: 300.0})
    _cache(sessions, fleet, PRICE, {slot0: 0.2, RAN: 0.2})
    _cache(sessions, fleet, SOLAR, {slot0: 0.0, RAN: 0.2})
    row = _book(sessions, fleet, RAN)
    assert row.grid_kwh < row.facility_energy_kwh  # the shard got some solar
    # When compared with running at 18:00
    with sessions() as s:
        booked, counter, _ = realised(s, fleet, [row], SUBMITTED)
        totals, _ = asap_counterfactual(s, [row], SUBMITTED, fleet)
    # Then the counterfactual draws everything from the grid (no solar at 18:00): the saving
    # is the solar the shard used, priced at the grid's intensity
    assert counter.grid_kwh == pytest.approx(row.facility_energy_kwh)
    solar = row.facility_energy_kwh - row.grid_kwh
    assert counter.co2_g - booked.co2_g == pytest.approx(solar * 300.0, rel=1e-9)
    assert totals.co2_g == pytest.approx(counter.co2_g)


def test_no_saving_is_claimed_against_a_missing_signal(sessions: sessionmaker[Session]) -> None:
    # Given no carbon cached for the submission slot (only for the slot it ran in)
    fleet = _fleet()
    ran = SUBMITTED.replace(minute=0) + timedelta(hours=2)
    _cache(sessions, fleet, CARBON, {ran: 100.0})
    row = _book(sessions, fleet, ran)
    with sessions() as s:
        booked, counter, intensity = realised(s, fleet, [row], SUBMITTED)
    # Then the zone average is not used as a counterfactual: the row keeps its booked figure
    assert intensity[SITE] is None
    assert counter.co2_g == booked.co2_g


def test_asap_model_is_the_named_model_else_the_largest_allowed_on_the_pool() -> None:
    fleet = load_sample_fleet()
    # Given an auto batch at the sample fleet's floor: asap runs the larger chat model
    assert asap_model(fleet, None, 0.4, "CPU") == "tiny-chat"
    # And a named model is what asap runs; no model above a floor of 0.7 means none
    assert asap_model(fleet, "tiny-chat-mini", None, "CPU") == "tiny-chat-mini"
    assert asap_model(fleet, None, 0.7, "CPU") is None


def test_savings_split_by_place_and_time_and_by_model_choice(
    sessions: sessionmaker[Session],
) -> None:
    # Given a row that ran on the smaller model 4 hours after submission in a cleaner slot,
    # where asap would have run the larger model at once
    fleet = _fleet()
    slot0 = SUBMITTED.replace(minute=0)
    ran = slot0 + timedelta(hours=4)
    _cache(sessions, fleet, CARBON, {slot0: 500.0, ran: 100.0})
    _cache(sessions, fleet, PRICE, {slot0: 0.3, ran: 0.1})
    row = _book(sessions, fleet, ran)
    row.model = "tiny-chat-mini"
    # When the realised savings are split
    with sessions() as s:
        split = realised_split(s, fleet, [row], SUBMITTED, lambda r: "tiny-chat")
        booked, counter, _ = realised(s, fleet, [row], SUBMITTED)
    # Then "by place and time" is the same model run at once: the realised figure as before
    assert split.at_once.co2_g == counter.co2_g and split.booked.co2_g == booked.co2_g
    assert split.at_once.co2_g - split.booked.co2_g == pytest.approx(
        booked.grid_kwh * (500.0 - 100.0), rel=1e-9
    )
    # And "by model choice" runs the same tokens on asap's model at once: its energy scales by
    # the token model's ratio, its embodied CO2 by the GPU-hour ratio
    big, small = (
        energy_from_tokens(fleet.model(m).profiles["CPU"], 1.0, 100, 100)
        for m in ("tiny-chat", "tiny-chat-mini")
    )
    asap, same = split.at_once_asap_model, split.at_once
    assert asap.facility_kwh == pytest.approx(same.facility_kwh * big.it_kwh / small.it_kwh)
    assert asap.co2_location_g == pytest.approx(same.co2_location_g * big.it_kwh / small.it_kwh)
    assert asap.embodied_co2_g == pytest.approx(
        same.embodied_co2_g * big.gpu_hours / small.gpu_hours
    )
    assert asap.co2_g > same.co2_g
    assert split.model_changes == (("tiny-chat", "tiny-chat-mini"),)
    # And a row that ran asap's own model has no model-choice line
    with sessions() as s:
        none = realised_split(s, fleet, [row], SUBMITTED, lambda r: r.model)
    assert none.at_once_asap_model == none.at_once and none.model_changes == ()
