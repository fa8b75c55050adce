"""Sample fleet and SYNTHETIC signals for the demo (generated, never copied from real traces)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from scheduler.domain import Fleet
from scheduler.fleet import load_fleet
from scheduler.forecasts.synthetic import synthetic_signals

__all__ = ["load_sample_fleet", "sample_fleet_path", "synthetic_signals"]


def sample_fleet_path() -> Path:
    """Path of the bundled three-site sample ``fleet.yaml``."""
    return Path(str(resources.files(__package__).joinpath("fleet.yaml")))


def load_sample_fleet() -> Fleet:
    """The bundled sample fleet (gb-london, de-frankfurt, es-madrid; CPU pools)."""
    return load_fleet(sample_fleet_path())
