"""Intel RAPL CPU-package energy meter over ``/sys/class/powercap`` (wraparound-safe)."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from scheduler.domain import MeasurementMethod
from scheduler.errors import EnergyMeterError
from workers.energy.base import Measurement
from workers.energy.polling import PollingThread
from workers.energy.shared_package import DEFAULT_DIR, SharedPackage

log = logging.getLogger(__name__)

POWERCAP_ROOT = Path("/sys/class/powercap")
UJ_PER_KWH = 3.6e12
_TOP_ZONE = re.compile(r"^intel-rapl:\d+$")


@dataclass(frozen=True, slots=True)
class RaplZone:
    """One top-level RAPL zone (a CPU package, or ``psys``) and its counter range in uJ."""

    path: Path
    name: str
    max_energy_range_uj: int

    def read_uj(self) -> int:
        """Read the zone's energy counter in uJ.

        Raises:
            EnergyMeterError: the counter cannot be read.
        """
        try:
            return int((self.path / "energy_uj").read_text().strip())
        except (OSError, ValueError) as e:
            raise EnergyMeterError(f"cannot read {self.path / 'energy_uj'}: {e}") from e


def rapl_zones(root: Path = POWERCAP_ROOT) -> list[RaplZone]:
    """Return the top-level RAPL zones under ``root`` whose counters can actually be read.

    Sub-zones (``intel-rapl:0:0``, core/uncore/dram) are inside their package and are not
    counted twice; ``psys`` (the whole SoC) is used only when there is no package zone, for
    the same reason. Since Linux 5.10 ``energy_uj`` is readable by root only, so readability
    is tried, not assumed.
    """
    if not root.is_dir():
        return []
    zones = []
    for path in sorted(root.iterdir()):
        if not _TOP_ZONE.match(path.name):
            continue
        try:
            name = (path / "name").read_text().strip()
            max_range = int((path / "max_energy_range_uj").read_text().strip())
            int((path / "energy_uj").read_text().strip())
        except (OSError, ValueError) as e:
            log.info("RAPL zone %s is not readable: %s", path, e)
            continue
        zones.append(RaplZone(path=path, name=name, max_energy_range_uj=max_range))
    packages = [z for z in zones if z.name.startswith("package")]
    return packages or zones


def counter_delta_uj(start_uj: int, end_uj: int, max_energy_range_uj: int) -> int:
    """Energy between two readings of a counter that wraps to 0 after ``max_energy_range_uj``."""
    if end_uj >= start_uj:
        return end_uj - start_uj
    return max_energy_range_uj - start_uj + end_uj


class RaplMeter:
    """Measures CPU-package energy with RAPL (not DRAM, GPUs or the rest of the machine).

    A counter wraps after ``max_energy_range_uj`` (~262 kJ, i.e. about 40 minutes at 100 W),
    so a background thread reads it every ``poll_interval_s`` and adds up the deltas; one
    wrap between two reads is handled, more than one cannot be seen, hence the short period.
    """

    method = MeasurementMethod.MEASURED_RAPL

    def __init__(
        self,
        *,
        root: Path = POWERCAP_ROOT,
        zones: Sequence[RaplZone] | None = None,
        poll_interval_s: float = 60.0,
        poll_in_thread: bool = True,
        clock: Callable[[], float] = time.monotonic,
        share_dir: Path | None = DEFAULT_DIR,
    ) -> None:
        """Find the readable zones.

        Args:
            root: The powercap directory (tests pass a directory tree of their own).
            zones: Zones to use instead of discovering them under ``root``.
            poll_interval_s: How often to read the counters during a window, in seconds.
            poll_in_thread: Read in a background thread (tests call ``poll`` instead).
            clock: Monotonic clock in seconds.
            share_dir: Where the host's windows register per package, so overlapping
                windows split what they share (``workers.energy.shared_package``); None reads
                the package alone (every window books the whole package).

        Raises:
            EnergyMeterError: no RAPL zone is readable.
        """
        self.zones = list(zones) if zones is not None else rapl_zones(root)
        if not self.zones:
            raise EnergyMeterError(
                f"no readable RAPL zone under {root}: the CPU or VM exposes none, or energy_uj "
                "is root-only (Linux >= 5.10); run the worker with read access or accept the "
                "labelled estimate"
            )
        self.poll_interval_s = poll_interval_s
        self.poll_in_thread = poll_in_thread
        self._clock = clock
        self._lock = threading.Lock()
        self._poller = PollingThread(
            self.poll, name="rapl-poll", log=log, failure_message="RAPL read failed: %s"
        )
        self._t0_s: float | None = None
        self._last_uj: list[int] = []
        self._total_uj = 0
        self._shared = (
            [
                SharedPackage(z.path / "energy_uj", z.max_energy_range_uj, share_dir)
                for z in self.zones
            ]
            if share_dir is not None
            else None
        )
        self._windows: list[str] = []

    def begin(self) -> None:
        """Start a window: read every zone's counter.

        Raises:
            EnergyMeterError: a counter cannot be read.
        """
        self._poller.stop()
        with self._lock:
            self._last_uj = [z.read_uj() for z in self.zones]
            self._total_uj = 0
            self._t0_s = self._clock()
            if self._shared is not None:
                self._windows = [
                    p.begin(uj) for p, uj in zip(self._shared, self._last_uj, strict=True)
                ]
        if self.poll_in_thread:
            self._poller.start(self.poll_interval_s)

    def poll(self) -> None:
        """Read the counters once and add what they moved since the last read.

        Raises:
            EnergyMeterError: no window is open or a counter cannot be read.
        """
        with self._lock:
            if self._t0_s is None:
                raise EnergyMeterError("poll() outside a window: call begin() first")
            now = [z.read_uj() for z in self.zones]
            for k, zone in enumerate(self.zones):
                self._total_uj += counter_delta_uj(
                    self._last_uj[k], now[k], zone.max_energy_range_uj
                )
                if self._shared is not None:
                    self._shared[k].read(now[k])
            self._last_uj = now

    def end(self) -> Measurement:
        """Close the window and return the packages' energy, labelled ``measured-rapl``.

        Raises:
            EnergyMeterError: no window is open or a counter cannot be read.
        """
        self._poller.stop()
        if self._t0_s is None:
            raise EnergyMeterError("end() without begin(): open a window first")
        self.poll()
        with self._lock:
            duration_s = max(0.0, self._clock() - self._t0_s)
            total_uj = self._total_uj
            self._t0_s = None
            shares = (
                [
                    p.end(w, uj)
                    for p, w, uj in zip(self._shared, self._windows, self._last_uj, strict=True)
                ]
                if self._shared is not None
                else []
            )
        names = ",".join(z.name for z in self.zones)
        detail = (
            f"RAPL CPU package energy ({names}); excludes DRAM, GPUs and the rest of "
            f"the machine; {total_uj / 1e6:.1f} J"
        )
        method = self.method
        booked_uj = float(total_uj)
        peers = max((sh.peers for sh in shares), default=1)
        if shares:
            booked_uj = sum(sh.uj for sh in shares)
        if peers > 1:
            method = MeasurementMethod.MEASURED_RAPL_SHARED
            detail += (
                f" read by the package, {booked_uj / 1e6:.1f} J booked: shared with up to "
                f"{peers - 1} other open window(s), each read's delta split equally among the "
                "windows open over it"
            )
        return Measurement(
            energy_kwh=booked_uj / UJ_PER_KWH,
            duration_s=duration_s,
            method=method,
            detail=detail,
        )
