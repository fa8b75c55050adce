"""A shard attempt's energy window: model load included, a failing meter gives an estimate."""

from __future__ import annotations

import logging
from dataclasses import replace

from scheduler.domain import ModelSpec, Pool
from scheduler.errors import EnergyMeterError
from workers.energy.base import EnergyMeter, Measurement
from workers.energy.estimate import estimate_from_duration

log = logging.getLogger(__name__)


def begin_safely(meter: EnergyMeter) -> EnergyMeterError | None:
    """Start the meter's window; the error instead of raising it (the shard still runs)."""
    try:
        meter.begin()
    except EnergyMeterError as e:
        return e
    return None


def window_energy(
    meter: EnergyMeter,
    begin_error: EnergyMeterError | None,
    model: ModelSpec,
    pool: Pool,
    window_s: float,
    load_s: float,
) -> Measurement:
    """The attempt's energy; a meter that fails gives a labelled estimate, not a re-run.

    The window starts before the engine loads the model, so the first shard after a load books
    the load's energy too (measured with the shard, or in the estimate); a load over a second
    is said in the measurement's detail and the log.
    """
    error = begin_error
    measurement: Measurement | None = None
    if error is None:
        try:
            measurement = meter.end()
        except EnergyMeterError as e:
            error = e
    if measurement is None:
        profile = model.profiles.get(pool.gpu)
        measurement = estimate_from_duration(
            gpus=profile.gpus if profile else 1,
            power_w=profile.power_w if profile else 0.0,
            duration_s=window_s,
            reason=f"the {meter.method} meter failed ({error}); estimated instead of re-running",
        )
        log.warning("energy meter failed (%s): booked a labelled estimate", error)
    if load_s >= 1.0:
        note = f"includes loading model {model.name} ({load_s:.1f} s)"
        log.info("shard window %s", note)
        measurement = replace(measurement, detail=f"{measurement.detail}; {note}".strip("; "))
    return measurement
