"""The review, the batch summaries, the ledger totals and the reports read the same numbers."""

from __future__ import annotations

import math
from datetime import datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.review.batch_review import batch_review
from scheduler.review.reports import emissions_totals, ledger_entries
from scheduler.store.ledger import ledger_totals
from scheduler.store.summaries import batch_summary
from scheduler.store.tables import LedgerEntry
from tests.review_seed import seed_review_store


def test_every_view_of_a_batch_shows_the_same_planned_and_booked_figures(
    sessions: sessionmaker[Session], pinned_now: datetime
) -> None:
    # Given the review seed: batches that ran, run, and wait, under one plan
    seeded = seed_review_store(sessions, now=pinned_now)
    checked = 0
    with sessions() as s:
        for batch_id in seeded.batch_tenant:
            rows = list(s.scalars(select(LedgerEntry).where(LedgerEntry.batch_id == batch_id)))
            # When the batch object, its review and the ledger totals are read
            summary = batch_summary(s, batch_id)
            review = batch_review(s, batch_id)
            totals = ledger_totals(s, batch_id=batch_id)
            report = emissions_totals(rows)
            # Then planned figures agree between the batch object and the review
            for key in ("co2_g", "cost", "water_l", "energy_kwh"):
                assert getattr(review.planned, key) == pytest.approx(
                    summary["planned"][key], rel=1e-12, abs=1e-12
                )
            # and booked figures agree between the batch object, the review, the ledger totals
            # and the emissions report
            booked = summary["actual"]
            for key in ("co2_g", "cost", "water_l", "energy_kwh"):
                assert getattr(review.actual, key) == pytest.approx(booked[key], rel=1e-12)
            assert totals.co2_g == pytest.approx(booked["co2_g"], rel=1e-12)
            assert totals.water_l == pytest.approx(booked["water_l"], rel=1e-12)
            assert totals.cost == pytest.approx(booked["cost"], rel=1e-12)
            assert totals.facility_energy_kwh == pytest.approx(booked["energy_kwh"], rel=1e-12)
            assert report.scope2_location_g + report.embodied_co2_g == pytest.approx(
                booked["co2_g"], rel=1e-12
            )
            assert report.facility_energy_kwh == pytest.approx(booked["energy_kwh"], rel=1e-12)
            checked += bool(rows)
        # and the period report over every row sums the same ledger
        every = ledger_entries(s, seeded.now.replace(year=2000), seeded.now.replace(year=2100))
        assert math.fsum(r.co2_location_g for r in every) == pytest.approx(
            emissions_totals(every).scope2_location_g
        )
    assert checked >= 2  # batches with booked rows were compared, not only empty ones
