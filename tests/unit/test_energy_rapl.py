"""RAPL readings from a powercap directory tree written in tmp_path (the real file interface)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.domain import MeasurementMethod
from scheduler.errors import EnergyMeterError
from workers.energy.rapl import UJ_PER_KWH, RaplMeter, counter_delta_uj, rapl_zones

MAX_UJ = 262_143_328_850  # a real package's max_energy_range_uj


def zone(root: Path, dirname: str, name: str, energy_uj: int, max_uj: int = MAX_UJ) -> Path:
    path = root / dirname
    path.mkdir(parents=True)
    (path / "name").write_text(f"{name}\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


def set_uj(path: Path, energy_uj: int) -> None:
    (path / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture
def two_packages(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "powercap"
    p0 = zone(root, "intel-rapl:0", "package-0", 1_000_000)
    p1 = zone(root, "intel-rapl:1", "package-1", 5_000_000)
    zone(root, "intel-rapl:0:0", "core", 400_000)  # inside package-0: must not count twice
    zone(root, "intel-rapl:2", "psys", 9_000_000)  # whole SoC: overlaps the packages
    return root, p0, p1


def test_packages_are_found_and_subzones_and_psys_skipped(
    two_packages: tuple[Path, Path, Path],
) -> None:
    # Given packages, a core sub-zone and a psys zone / When discovered
    root, _, _ = two_packages
    zones = rapl_zones(root)
    # Then only the packages are used
    assert [z.name for z in zones] == ["package-0", "package-1"]
    assert all(z.max_energy_range_uj == MAX_UJ for z in zones)


def test_window_energy_is_the_sum_of_package_deltas(two_packages: tuple[Path, Path, Path]) -> None:
    # Given a meter on two packages
    root, p0, p1 = two_packages
    meter = RaplMeter(root=root, poll_in_thread=False)
    meter.begin()
    # When package 0 uses 30 J and package 1 uses 12 J
    set_uj(p0, 1_000_000 + 30_000_000)
    set_uj(p1, 5_000_000 + 12_000_000)
    measurement = meter.end()
    # Then the window has 42 J, labelled as measured by RAPL
    assert measurement.method is MeasurementMethod.MEASURED_RAPL
    assert measurement.energy_kwh * UJ_PER_KWH == pytest.approx(42_000_000)
    assert "package-0,package-1" in measurement.detail


def test_counter_wraparound_uses_the_max_energy_range() -> None:
    # Given readings either side of a wrap / When / Then the delta spans it
    assert counter_delta_uj(MAX_UJ - 100, 250, MAX_UJ) == 350
    assert counter_delta_uj(100, 250, MAX_UJ) == 150


def test_polling_catches_a_wrap_during_a_long_window(tmp_path: Path) -> None:
    # Given one package near the top of its range
    root = tmp_path / "powercap"
    p0 = zone(root, "intel-rapl:0", "package-0", MAX_UJ - 2_000_000)
    meter = RaplMeter(root=root, poll_in_thread=False)
    meter.begin()
    # When it wraps, is polled, then moves on almost a whole range before the end
    set_uj(p0, 1_000_000)
    meter.poll()
    set_uj(p0, MAX_UJ - 10)
    measurement = meter.end()
    # Then every microjoule is counted once
    assert measurement.energy_kwh * UJ_PER_KWH == pytest.approx(3_000_000 + MAX_UJ - 10 - 1_000_000)


def test_unreadable_counters_mean_no_rapl(tmp_path: Path) -> None:
    # Given a zone whose energy_uj cannot be read (a directory in its place)
    root = tmp_path / "powercap"
    broken = root / "intel-rapl:0"
    broken.mkdir(parents=True)
    (broken / "name").write_text("package-0\n")
    (broken / "max_energy_range_uj").write_text(f"{MAX_UJ}\n")
    (broken / "energy_uj").mkdir()
    # When / Then discovery finds nothing and the meter refuses with a hint
    assert rapl_zones(root) == []
    assert rapl_zones(tmp_path / "absent") == []
    with pytest.raises(EnergyMeterError, match="root-only"):
        RaplMeter(root=root)


def test_psys_is_used_when_there_is_no_package_zone(tmp_path: Path) -> None:
    # Given only a psys zone / When discovered / Then it is used
    root = tmp_path / "powercap"
    zone(root, "intel-rapl:0", "psys", 7)
    assert [z.name for z in rapl_zones(root)] == ["psys"]


def test_background_polling_thread_stops_at_end(two_packages: tuple[Path, Path, Path]) -> None:
    # Given a meter polling every 10 ms in a thread
    root, p0, _ = two_packages
    meter = RaplMeter(root=root, poll_interval_s=0.01)
    meter.begin()
    set_uj(p0, 1_000_000 + 5_000_000)
    # When the window ends
    measurement = meter.end()
    # Then the thread is gone and the energy counted once
    assert not meter._poller.running
    assert measurement.energy_kwh * UJ_PER_KWH == pytest.approx(5_000_000)


def test_two_windows_on_one_package_split_it_and_book_it_once(tmp_path: Path) -> None:
    # Given two workers' meters on the same CPU package (one host's registry of windows)
    root = tmp_path / "powercap"
    p0 = zone(root, "intel-rapl:0", "package-0", 1_000_000)
    shared = tmp_path / "windows"
    a = RaplMeter(root=root, poll_in_thread=False, share_dir=shared)
    b = RaplMeter(root=root, poll_in_thread=False, share_dir=shared)
    # When A runs alone for 10 J, both for 20 J, then B alone for 6 J
    a.begin()
    set_uj(p0, 11_000_000)
    b.begin()
    set_uj(p0, 31_000_000)
    first = a.end()
    set_uj(p0, 37_000_000)
    second = b.end()
    # Then the package's 36 J are booked once: 10 + 20/2 to A, 20/2 + 6 to B, each labelled
    # shared and saying how it was split
    assert first.energy_kwh * UJ_PER_KWH == pytest.approx(20_000_000)
    assert second.energy_kwh * UJ_PER_KWH == pytest.approx(16_000_000)
    assert (first.energy_kwh + second.energy_kwh) * UJ_PER_KWH == pytest.approx(36_000_000)
    assert first.method is MeasurementMethod.MEASURED_RAPL_SHARED
    assert second.method is MeasurementMethod.MEASURED_RAPL_SHARED
    assert "split equally" in first.detail and "30.0 J read by the package" in first.detail


def test_a_window_alone_books_the_whole_package_as_measured_rapl(tmp_path: Path) -> None:
    root = tmp_path / "powercap"
    p0 = zone(root, "intel-rapl:0", "package-0", 0)
    meter = RaplMeter(root=root, poll_in_thread=False, share_dir=tmp_path / "windows")
    meter.begin()
    set_uj(p0, 36_000_000)
    m = meter.end()
    assert m.method is MeasurementMethod.MEASURED_RAPL
    assert m.energy_kwh * UJ_PER_KWH == pytest.approx(36_000_000)
