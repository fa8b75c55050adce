"""A shard attempt's energy window and its model load (labelled); a failing meter gives an estimate."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from scheduler.domain import ESTIMATED_LOAD_SUFFIX, MeasurementMethod, ModelSpec, Pool, Profile
from scheduler.errors import EnergyMeterError
from workers.energy.base import EnergyMeter, Measurement
from workers.energy.estimate import BookedEnergy, estimate_from_duration

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

    The window starts before the engine loads the model; ``model_load_energy`` then books the
    load as its own labelled figure on the first shard after it. A load over a second is said in
    the measurement's detail and the log.
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


@dataclass(frozen=True, slots=True)
class LoadEnergy:
    """A model load's IT energy, booked on the first shard after it as its own labelled figure.

    ``method`` is the window meter's (``measured-nvml``, ``measured-rapl``: the window's energy
    apportioned by wall time) when the load ran inside a measured window, else ``estimated``
    (GPUs x profile power x load time). ``added`` says whether the figure had to be added to the
    shard's booked energy (it was not in it) or is already part of it: counted once either way.
    """

    kwh: float
    method: str
    seconds: float
    added: bool


def model_load_energy(
    booked: BookedEnergy,
    window: Measurement,
    *,
    load_s: float,
    in_window: bool,
    profile: Profile | None,
) -> tuple[BookedEnergy, LoadEnergy]:
    """Book a model load: its labelled energy, and the shard's booked energy including it once.

    Args:
        booked: what ``booked_energy`` chose for the shard.
        window: the meter window's measurement (or the estimate that replaced it).
        load_s: the load's wall time.
        in_window: the load ran inside the meter window (worker path); False when the engine
            was loaded before it (``run-batch`` loads while the file is validated).
        profile: the model's profile on the pool's GPU type (its power for the estimate).
    """
    if in_window and not window.estimated and window.duration_s > 0:
        share = min(1.0, load_s / window.duration_s)
        load = LoadEnergy(window.energy_kwh * share, str(window.method), load_s, added=False)
        return booked, load
    estimate = estimate_from_duration(
        gpus=profile.gpus if profile else 1,
        power_w=profile.power_w if profile else 0.0,
        duration_s=load_s,
        reason="model load: GPUs x profile power x load time",
    )
    # the busy-time estimate of a window that held the load already counts it
    included = in_window and booked.measurement.method == MeasurementMethod.ESTIMATED
    load = LoadEnergy(estimate.energy_kwh, str(MeasurementMethod.ESTIMATED), load_s, not included)
    if included:
        return booked, load
    m = booked.measurement
    note = f"plus model load {load.kwh:.3g} kWh (estimated)"
    method = m.method
    if not m.estimated and load.kwh > 0:  # a measured row with an estimated part says so
        method = MeasurementMethod(f"{m.method}{ESTIMATED_LOAD_SUFFIX}")
    total = replace(
        m,
        energy_kwh=m.energy_kwh + load.kwh,
        method=method,
        detail=f"{m.detail}; {note}".strip("; "),
    )
    return replace(booked, measurement=total), load
