"""Energy estimates from the model profile (busy time or tokens), always labelled ``estimated``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from scheduler.domain import MeasurementMethod, Profile
from scheduler.errors import EnergyMeterError
from scheduler.pricing import busy_it_kwh, energy_from_tokens
from workers.energy.base import Measurement


def estimate_from_duration(
    *, gpus: int, power_w: float, duration_s: float, reason: str = ""
) -> Measurement:
    """Estimate IT energy as ``gpus x power_w x duration_s``.

    Args:
        gpus: GPUs busy during the window.
        power_w: Mean draw of ONE GPU under batch load (the profile's ``power_w``).
        duration_s: Busy time in seconds.
        reason: Why nothing was measured (goes into the detail).

    Raises:
        EnergyMeterError: a figure is negative.
    """
    if gpus < 0 or power_w < 0 or duration_s < 0:
        raise EnergyMeterError(
            f"estimate needs gpus, power_w and duration_s >= 0, got {gpus}, {power_w}, {duration_s}"
        )
    detail = f"estimated: {gpus} GPU x {power_w:g} W (profile) x {duration_s:.1f} s busy time"
    return Measurement(
        energy_kwh=busy_it_kwh(gpus, power_w, duration_s),
        duration_s=duration_s,
        method=MeasurementMethod.ESTIMATED,
        detail=f"{detail}; {reason}" if reason else detail,
    )


def estimate_from_tokens(
    profile: Profile,
    *,
    input_tokens: int,
    output_tokens: int,
    duration_s: float | None = None,
) -> Measurement:
    """Estimate IT energy from tokens with the planner's token model (``estimated-profile``).

    ``gpu_hours = gpus * (I / prefill_tok_s + O / decode_tok_s) / 3600`` and
    ``it_kwh = gpu_hours * power_w / 1000`` (planning-formats.md section 4, computed by
    ``scheduler.pricing.energy_from_tokens``), so the ledger and the planner price
    the same work the same way.

    Args:
        profile: The model's profile on this pool's GPU type.
        input_tokens: Prompt tokens processed.
        output_tokens: Completion tokens generated.
        duration_s: Wall time of the window if known (default: the replica time the formula
            implies, ``gpu_hours * 3600 / gpus``).

    Raises:
        EnergyMeterError: token counts are negative or the profile has no throughput.
    """
    if input_tokens < 0 or output_tokens < 0:
        raise EnergyMeterError("token counts must be >= 0")
    if profile.prefill_tok_s <= 0 or profile.decode_tok_s <= 0 or profile.gpus < 1:
        raise EnergyMeterError(
            "the profile needs gpus >= 1 and positive prefill_tok_s and decode_tok_s; fix fleet.yaml"
        )
    energy = energy_from_tokens(profile, 1.0, input_tokens, output_tokens)
    gpu_hours = energy.gpu_hours
    return Measurement(
        energy_kwh=energy.it_kwh,
        duration_s=gpu_hours * 3600.0 / profile.gpus if duration_s is None else duration_s,
        method=MeasurementMethod.ESTIMATED_PROFILE,
        detail=(
            f"estimated from tokens: {input_tokens} in / {output_tokens} out at "
            f"{profile.prefill_tok_s:g}/{profile.decode_tok_s:g} tok/s on {profile.gpus} GPU "
            f"x {profile.power_w:g} W = {gpu_hours:.6f} GPU-h"
        ),
    )


@dataclass(frozen=True, slots=True)
class BookedEnergy:
    """The IT energy a ledger row books, its GPU-hours, and the second estimate beside it.

    Attributes:
        measurement: the figure booked (measured, ``estimated-profile`` or ``estimated``).
        gpu_hours: GPU-hours booked (embodied CO2): the token model's for a profile estimate,
            else GPUs x wall time.
        busy_estimate_kwh: the busy-time estimate (GPUs x profile power x wall time) when the
            booked figure is the profile estimate; None otherwise.
    """

    measurement: Measurement
    gpu_hours: float
    busy_estimate_kwh: float | None = None


def booked_energy(
    measurement: Measurement,
    profile: Profile | None,
    *,
    input_tokens: int,
    output_tokens: int,
) -> BookedEnergy:
    """Choose the energy figure to book for one attempt.

    A measurement (NVML, RAPL) is booked as measured. When nothing was measured, the planner's
    token model on the actual tokens (``estimated-profile``) is booked, so a shard that runs as
    planned books its planned energy exactly, and the busy-time estimate (GPUs x power x wall
    time) is kept beside it as a second, labelled estimate. The busy-time estimate is booked
    instead where it is the better evidence: no profile for the pool, or no tokens counted.

    Args:
        measurement: what the worker's meter returned.
        profile: the model's profile on the pool's GPU type (None if there is none).
        input_tokens: prompt tokens the engine reported for the attempt.
        output_tokens: completion tokens the engine reported for the attempt.
    """
    gpus = profile.gpus if profile else 1
    wall_gpu_hours = gpus * max(0.0, measurement.duration_s) / 3600.0
    if not measurement.estimated:
        return BookedEnergy(measurement, wall_gpu_hours)
    usable = (
        profile is not None
        and profile.prefill_tok_s > 0
        and profile.decode_tok_s > 0
        and input_tokens + output_tokens > 0
    )
    if not usable or profile is None:
        return BookedEnergy(measurement, wall_gpu_hours)
    from_tokens = estimate_from_tokens(
        profile,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        duration_s=measurement.duration_s,
    )
    gpu_hours = energy_from_tokens(profile, 1.0, input_tokens, output_tokens).gpu_hours
    return BookedEnergy(from_tokens, gpu_hours, busy_estimate_kwh=measurement.energy_kwh)


class EstimateMeter:
    """An ``EnergyMeter`` that times the window and estimates ``gpus x power_w x duration``."""

    method = MeasurementMethod.ESTIMATED

    def __init__(
        self,
        *,
        gpus: int,
        power_w: float,
        reason: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Estimate for ``gpus`` GPUs at ``power_w`` each; ``reason`` says why not measured."""
        self.gpus = gpus
        self.power_w = power_w
        self.reason = reason
        self._clock = clock
        self._t0_s: float | None = None

    def begin(self) -> None:
        """Start timing the window."""
        self._t0_s = self._clock()

    def end(self) -> Measurement:
        """Return the estimate for the time since ``begin``.

        Raises:
            EnergyMeterError: ``begin`` was not called.
        """
        if self._t0_s is None:
            raise EnergyMeterError("end() without begin(): open a window first")
        duration_s = max(0.0, self._clock() - self._t0_s)
        self._t0_s = None
        return estimate_from_duration(
            gpus=self.gpus, power_w=self.power_w, duration_s=duration_s, reason=self.reason
        )
