"""``batches show`` labels every planned figure as an estimate and booked ones by how they were got."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.commands.batches import describe_gridshift


def _summary(energy_method: str | None) -> dict[str, Any]:
    """A ``gridshift`` object shaped like ``scheduler.store.summaries.batch_summary``'s."""
    slot = {
        "site": "de-frankfurt",
        "pool": "h100",
        "model": "tiny-chat",
        "slot_start": 1_795_000_000,
        "requests": 12,
        "energy_kwh": 0.25,
        "co2_g": 40.0,
        "water_l": 0.5,
        "cost": 0.03,
        "carbon_g_per_kwh": 160.0,
    }
    return {
        "deadline": 1_795_100_000,
        "min_quality": 0.5,
        "sites": ["de-frankfurt"],
        "priority": 2.0,
        "parts": [
            {
                "id": "p1",
                "model": None,
                "min_quality": 0.5,
                "requests": 12,
                "input_tokens": 700.0,
                "output_tokens": 230.0,
                "tokens_estimated": True,
            }
        ],
        "planned": {
            "plan_id": 3,
            "estimated": True,
            "sites": ["de-frankfurt"],
            "first_slot_at": 1_795_000_000,
            "last_slot_at": 1_795_000_000,
            "requests": 12,
            "energy_kwh": 0.25,
            "co2_g": 40.0,
            "water_l": 0.5,
            "cost": 0.03,
            "slots": [slot],
        },
        "shards": {"done": 1},
        "energy_method": energy_method,
        "actual": {
            "entries": 1,
            "energy_kwh": 0.2,
            "co2_g": 35.0,
            "co2_market_g": None,
            "embodied_co2_g": 2.0,
            "water_l": 0.4,
            "cost": 0.02,
        },
    }


@pytest.mark.parametrize(
    ("energy_method", "label"),
    [
        ("measured-nvml", "(measured: measured-nvml)"),
        ("estimated", "(estimated)"),
        ("mixed", "(partly measured, partly estimated)"),
    ],
)
def test_booked_figures_are_labelled_by_how_they_were_obtained(
    energy_method: str, label: str
) -> None:
    # Given a batch that ran, with its ledger's energy method
    # When its gridshift part is described
    lines = describe_gridshift(_summary(energy_method))

    # Then the plan is an estimate, and the booked line carries the ledger's label
    planned = next(line for line in lines if line.strip().startswith("planned"))
    booked = next(line for line in lines if line.strip().startswith("booked"))
    assert planned.endswith("(estimated)")
    assert "energy 200 Wh" in booked and "of which embodied 2.00 g" in booked
    assert booked.endswith(label)


def test_unplanned_batch_says_so_and_shows_no_booked_figures() -> None:
    # Given a batch not yet planned and with nothing booked
    summary = _summary(None)
    summary["planned"] = {"plan_id": None, "estimated": True, "slots": []}
    summary["actual"] = {"entries": 0}

    # When it is described
    lines = describe_gridshift(summary)

    # Then it says it is not planned, and books nothing
    assert any(line.strip() == "plan         not planned yet" for line in lines)
    assert not any(line.strip().startswith("booked") for line in lines)
