"""The energy-meter protocol and the labelled measurement every meter returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from scheduler.domain import MeasurementMethod, is_estimate


@dataclass(frozen=True, slots=True)
class Measurement:
    """IT energy over a window, labelled with how it was obtained."""

    energy_kwh: float
    duration_s: float
    method: MeasurementMethod
    detail: str = ""

    @property
    def estimated(self) -> bool:
        """True when this figure is an estimate, not a measurement."""
        return is_estimate(self.method)


@runtime_checkable
class EnergyMeter(Protocol):
    """Measures the IT energy of the devices a worker owns over a window."""

    method: MeasurementMethod

    def begin(self) -> None:
        """Start a measurement window."""

    def end(self) -> Measurement:
        """Close the window and return its energy.

        Raises:
            EnergyMeterError: the counters could not be read.
        """
        ...
