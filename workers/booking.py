"""``meter`` and ``book``: a finished attempt's booked energy, then its one guarded transaction.

``meter`` turns the window's raw measurement into the energy the ledger books (tokens, the
model-load figure, labelled estimates); ``book`` commits, in ONE transaction guarded by the
lease, the shard ``done`` + its counts + one ledger row for (shard, attempt) + the batch's
counters (+ ``finalizing`` when it was the last shard). ``LeaseLost`` rolls all of it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from scheduler.dispatch.finalize import begin_finalizing
from scheduler.dispatch.leases import Claim, mark_done
from scheduler.dispatch.signals import BookingSignal, SignalLookup, ledger_signal
from scheduler.dispatch.slots import slot_floor
from scheduler.domain import Fleet, Profile
from scheduler.pricing import energy_from_it
from scheduler.store.db import transaction
from scheduler.store.tables import Batch, LedgerEntry, now_utc
from workers.attempt import Ran, Work
from workers.energy.estimate import BookedEnergy, booked_energy
from workers.energy.window import LoadEnergy, model_load_energy
from workers.ledger import (
    LedgerValues,
    PlannedShare,
    compute_ledger_values,
    deviations,
    planned_share,
    renewable_allowance_kwh,
)


@dataclass(frozen=True, slots=True)
class Metered:
    """The attempt's booked energy and what it was computed from."""

    energy: BookedEnergy
    load_energy: LoadEnergy | None
    profile: Profile | None
    input_tokens: int
    output_tokens: int


def meter(ran: Ran) -> Metered:
    """Booked energy of an attempt: measured or labelled estimate, the model load counted once."""
    input_tokens = sum(r.input_tokens for r in ran.results)
    output_tokens = sum(r.output_tokens for r in ran.results)
    profile = ran.model.profiles.get(ran.pool.gpu)
    energy = booked_energy(
        ran.measurement, profile, input_tokens=input_tokens, output_tokens=output_tokens
    )
    load_energy = None
    if ran.model_load is not None:
        energy, load_energy = model_load_energy(
            energy,
            ran.measurement,
            load_s=ran.model_load.seconds,
            in_window=ran.loaded_in_window,
            profile=profile,
        )
    return Metered(energy, load_energy, profile, input_tokens, output_tokens)


def _renewable_booked_kwh(s: Session, site: str, slot: datetime, slot_end: datetime) -> float:
    booked = s.execute(
        select(func.coalesce(func.sum(LedgerEntry.facility_energy_kwh - LedgerEntry.grid_kwh), 0.0))
        .where(LedgerEntry.site == site)
        .where(LedgerEntry.started_at >= slot, LedgerEntry.started_at < slot_end)
    ).scalar_one()
    return float(booked)


@dataclass(frozen=True, slots=True)
class _Priced:
    """The attempt priced: the signal it was booked with, its planned share, its figures."""

    booking: BookingSignal
    planned: PlannedShare | None
    values: LedgerValues


def book(
    factory: sessionmaker[Session],
    claim: Claim,
    work: Work,
    ran: Ran,
    metered: Metered,
    outputs: tuple[Path, Path],
    *,
    fleet: Fleet,
    ended: datetime,
    signal_lookup: SignalLookup | None = None,
) -> bool:
    """Commit the attempt in one transaction guarded by its lease; whether the batch finishes.

    In that transaction: the shard is marked done under its lease, the attempt is priced with
    the signal of the slot it ran in (``_price``), its ledger row is added (``_entry``), the
    batch's request counts move, and the batch begins finalizing when it was the last shard.

    Raises:
        LeaseLost: the lease was lost (nothing committed).
        Exception: a database error (nothing committed).
    """
    done, failed = ran.done, ran.failed
    started = ended - timedelta(seconds=ran.measurement.duration_s)
    slot = slot_floor(started, fleet.slot_minutes)
    with transaction(factory) as s:
        mark_done(
            s,
            claim,
            now=ended,
            requests_done=len(done),
            requests_failed=len(failed),
            output_path=str(outputs[0]),
            error_path=str(outputs[1]),
        )
        priced = _price(s, fleet, work, ran, metered, slot, signal_lookup)
        s.add(_entry(claim, work, ran, metered, priced, started=started, ended=ended, slot=slot))
        s.execute(
            update(Batch)
            .where(Batch.id == work.batch_id)
            .values(
                request_completed=Batch.request_completed + len(done),
                request_failed=Batch.request_failed + len(failed),
            )
        )
        return begin_finalizing(s, work.batch_id)


def _price(
    s: Session,
    fleet: Fleet,
    work: Work,
    ran: Ran,
    metered: Metered,
    slot: datetime,
    signal_lookup: SignalLookup | None,
) -> _Priced:
    """Price the attempt with the signal the planner used for the slot it ran in and the
    renewables left in that slot (``scheduler.pricing`` through ``workers.ledger``)."""
    site, pool = ran.site, ran.pool
    booking = ledger_signal(s, fleet, site.name, slot, work.assignment, lookup=signal_lookup)
    signal = booking.signal
    planned = planned_share(work.assignment, work.shard.request_count)
    in_planned_slot = (
        planned if planned and (planned.site, planned.slot) == (site.name, slot) else None
    )
    profile, energy = metered.profile, metered.energy
    allowance = renewable_allowance_kwh(
        signal,
        duration_s=ran.measurement.duration_s,
        slot_hours=fleet.slot_hours,
        already_booked_kwh=_renewable_booked_kwh(
            s, site.name, slot, slot + timedelta(minutes=fleet.slot_minutes)
        ),
        planned=in_planned_slot,
        facility_kwh=energy_from_it(0.0, energy.measurement.energy_kwh, site.pue).facility_kwh,
    )
    values = compute_ledger_values(
        energy.measurement,
        site=site,
        pool=pool,
        gpus_per_replica=profile.gpus if profile else 1,
        signal=signal,
        carbon_source=booking.source,
        renewable_allowance_kwh=allowance,
        gpu_hours=energy.gpu_hours,
        average_g_per_kwh=booking.average_g_per_kwh,
    )
    return _Priced(booking, planned, values)


def _entry(
    claim: Claim,
    work: Work,
    ran: Ran,
    metered: Metered,
    priced: _Priced,
    *,
    started: datetime,
    ended: datetime,
    slot: datetime,
) -> LedgerEntry:
    """The attempt's ledger row: its figures, their provenance, the plan beside them."""
    booking, planned, values = priced.booking, priced.planned, priced.values
    signal, profile, load = booking.signal, metered.profile, metered.load_energy
    return LedgerEntry(
        batch_id=work.batch_id,
        shard_id=work.shard.id,
        attempt=claim.attempt,
        tenant_id=work.tenant_id,
        site=ran.site.name,
        pool=ran.pool.name,
        model=ran.model.name,
        started_at=started,
        ended_at=ended,
        requests_done=len(ran.done),
        requests_failed=len(ran.failed),
        input_tokens=metered.input_tokens,
        output_tokens=metered.output_tokens,
        gpu_hours=values.gpu_hours,
        it_energy_kwh=values.it_energy_kwh,
        facility_energy_kwh=values.facility_energy_kwh,
        energy_method=values.energy_method,
        renewable_share=values.renewable_share,
        grid_kwh=values.grid_kwh,
        carbon_g_per_kwh=values.carbon_g_per_kwh,
        carbon_source=values.carbon_source,
        co2_location_g=values.co2_location_g,
        co2_market_g=values.co2_market_g,
        embodied_co2_g=values.embodied_co2_g,
        water_onsite_l=values.water_onsite_l,
        water_offsite_l=values.water_offsite_l,
        cost=values.cost,
        planned_energy_kwh=planned.energy_kwh if planned else None,
        planned_co2_g=planned.co2_g if planned else None,
        planned_water_l=planned.water_l if planned else None,
        planned_cost=planned.cost if planned else None,
        planned_grid_kwh=planned.grid_kwh if planned else None,
        carbon_factor=values.carbon_factor,
        signal_fallback=booking.fallback or booking.average_fallback,
        signal_provider=signal.carbon_provider,
        signal_synthetic=signal.synthetic,
        signal_fallback_reason=signal.fallback_reason,
        price_fallback=booking.price_fallback,
        co2_marginal_g=values.co2_marginal_g,
        co2_lifecycle_g=values.co2_lifecycle_g,
        market_basis=values.market_basis,
        busy_estimate_kwh=metered.energy.busy_estimate_kwh,
        model_load_kwh=load.kwh if load else None,
        model_load_method=load.method if load else None,
        deviations=deviations(
            planned,
            site=ran.site.name,
            slot=slot,
            input_tokens=metered.input_tokens,
            output_tokens=metered.output_tokens,
            values=values,
            renewable_kw=signal.renewable_kw,
            busy_gpu_s=ran.measurement.duration_s * (profile.gpus if profile else 1),
            signal_g_per_kwh=signal.carbon_g_per_kwh,
        ),
        created_at=now_utc(),
    )
