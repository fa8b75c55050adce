"""Replay of recorded NVML energy-counter readings, driving the real NVML meter without a GPU."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from workers.energy.base import Measurement
from workers.energy.nvml import COUNTER_MODULUS_MJ, NVML_ERROR_NOT_SUPPORTED, NvmlMeter

# One H100 SXM running batch decode of an 8B model, read once a second (t_s, counter mJ):
# idle ~72 W, ramp-up, 550-700 W under load, ramp-down. Written down by hand from the shape of
# an nvidia-smi log; the counter starts where a GPU up for a few weeks would be.
H100_TRACE: tuple[tuple[float, int], ...] = (
    (0.0, 1_837_402_551_206),
    (1.0, 1_837_402_623_641),
    (2.0, 1_837_402_698_790),
    (3.0, 1_837_402_939_611),
    (4.0, 1_837_403_454_957),
    (5.0, 1_837_404_043_312),
    (6.0, 1_837_404_685_119),
    (7.0, 1_837_405_356_487),
    (8.0, 1_837_406_011_730),
    (9.0, 1_837_406_710_394),
    (10.0, 1_837_407_394_870),
    (11.0, 1_837_407_998_163),
    (12.0, 1_837_408_564_408),
    (13.0, 1_837_409_143_972),
    (14.0, 1_837_409_769_266),
    (15.0, 1_837_410_430_893),
    (16.0, 1_837_411_120_617),
    (17.0, 1_837_411_822_984),
    (18.0, 1_837_412_490_351),
    (19.0, 1_837_413_102_730),
    (20.0, 1_837_413_676_962),
    (21.0, 1_837_414_228_517),
    (22.0, 1_837_414_824_449),
    (23.0, 1_837_415_458_806),
    (24.0, 1_837_416_148_123),
    (25.0, 1_837_416_824_589),
    (26.0, 1_837_417_469_972),
    (27.0, 1_837_418_068_311),
    (28.0, 1_837_418_470_896),
    (29.0, 1_837_418_589_102),
    (30.0, 1_837_418_663_480),
)


class ReplayNvmlError(Exception):
    """Raised by the replay backend the way ``pynvml.NVMLError`` is (``value`` is the code)."""

    def __init__(self, value: int, message: str) -> None:
        super().__init__(message)
        self.value = value


@dataclass(frozen=True, slots=True)
class GpuTrace:
    """Recorded readings of one GPU's NVML energy counter.

    ``readings`` are ``(t_s, energy_mj)`` with strictly increasing ``t_s``; between readings
    the counter is linear, so power is the slope of the current segment. ``counter_supported``
    False replays a pre-Volta GPU (counter calls fail with NOT_SUPPORTED, power still works);
    ``counter_offset_mj`` shifts the raw counter, modulo 2**64, to replay a wrap. ``uuid``,
    ``name``, ``memory_bytes`` and ``mig`` give the GPU an identity (default uuid
    ``GPU-replay-<index>``) for ``CUDA_VISIBLE_DEVICES`` resolution.
    """

    readings: Sequence[tuple[float, float]]
    counter_supported: bool = True
    counter_offset_mj: int = 0
    uuid: str = ""
    name: str = "NVIDIA H100 80GB HBM3"
    memory_bytes: int = 80 * 2**30
    mig: Sequence[tuple[str, int]] = ()  # MIG instances: (uuid, memory bytes)

    def __post_init__(self) -> None:
        """Check the readings are usable."""
        times = [t for t, _ in self.readings]
        if len(times) < 2 or any(b <= a for a, b in zip(times, times[1:], strict=False)):
            raise ValueError("a GpuTrace needs >= 2 readings with strictly increasing t_s")

    def energy_mj(self, t_s: float) -> float:
        """Cumulative energy at ``t_s`` (linear between readings, extrapolated at the ends)."""
        times = [t for t, _ in self.readings]
        k = min(max(bisect.bisect_right(times, t_s) - 1, 0), len(times) - 2)
        (t0, e0), (t1, e1) = self.readings[k], self.readings[k + 1]
        return e0 + (e1 - e0) * (t_s - t0) / (t1 - t0)

    def power_mw(self, t_s: float) -> float:
        """Power at ``t_s``: the slope of the segment ``t_s`` falls in, in mW (= mJ/s)."""
        times = [t for t, _ in self.readings]
        k = min(max(bisect.bisect_right(times, t_s) - 1, 0), len(times) - 2)
        (t0, e0), (t1, e1) = self.readings[k], self.readings[k + 1]
        return (e1 - e0) / (t1 - t0)


class ManualClock:
    """A clock that only moves when told to (seconds)."""

    def __init__(self, start_s: float = 0.0) -> None:
        """Start at ``start_s``."""
        self.now_s = start_s

    def __call__(self) -> float:
        """The current time in seconds."""
        return self.now_s

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds``."""
        self.now_s += seconds


class ReplayNvml:
    """An NVML backend (the subset the meter calls) answering from recorded traces."""

    NVMLError = ReplayNvmlError
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED

    def __init__(self, traces: Sequence[GpuTrace], clock: Callable[[], float]) -> None:
        """Serve ``traces`` (GPU index = position) at the times ``clock`` shows."""
        self.traces = list(traces)
        self.clock = clock
        self.initialised = 0

    def nvmlInit(self) -> None:
        """Count an initialisation."""
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        """Count a shutdown."""
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        """Number of replayed GPUs."""
        return len(self.traces)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        """The handle is the index; unknown indices fail like NVML's INVALID_ARGUMENT (2)."""
        if not 0 <= index < len(self.traces):
            raise ReplayNvmlError(2, f"Invalid Argument: no GPU {index} in this replay")
        return index

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        """The raw counter in mJ (offset and wrapped like a 64-bit counter)."""
        trace = self.traces[handle]
        if not trace.counter_supported:
            raise ReplayNvmlError(NVML_ERROR_NOT_SUPPORTED, "Not Supported")
        raw = trace.counter_offset_mj + round(
            trace.energy_mj(self.clock())
        )  # exact ints near 2**64
        return raw % COUNTER_MODULUS_MJ

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        """Current power in mW."""
        return int(round(self.traces[handle].power_mw(self.clock())))

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        """The GPU's (or a MIG instance's) UUID."""
        if isinstance(handle, tuple):
            return self.traces[handle[1]].mig[handle[2]][0]
        return self.traces[handle].uuid or f"GPU-replay-{handle}"

    def nvmlDeviceGetName(self, handle: int) -> str:
        """The GPU's model name."""
        return self.traces[handle].name

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: int) -> int:
        """MIG slots; a GPU without MIG answers NOT_SUPPORTED, as NVML does."""
        if not self.traces[handle].mig:
            raise ReplayNvmlError(NVML_ERROR_NOT_SUPPORTED, "Not Supported")
        return len(self.traces[handle].mig)

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: int, index: int) -> tuple[str, int, int]:
        """A MIG instance's handle."""
        if not 0 <= index < len(self.traces[handle].mig):
            raise ReplayNvmlError(2, "Invalid Argument")
        return ("mig", handle, index)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> SimpleNamespace:
        """Total memory of a GPU or a MIG instance, in bytes."""
        if isinstance(handle, tuple):
            return SimpleNamespace(total=self.traces[handle[1]].mig[handle[2]][1])
        return SimpleNamespace(total=self.traces[handle].memory_bytes)


class ReplayMeter:
    """An ``EnergyMeter`` that replays traces through ``NvmlMeter`` with a manual clock.

    ``advance`` moves time forward and polls at every recorded reading in between, the way
    the sampling thread would on a real GPU without an energy counter.
    """

    def __init__(self, traces: Sequence[GpuTrace], *, start_s: float | None = None) -> None:
        """Replay ``traces`` from ``start_s`` (default: the first reading of the first trace)."""
        first = traces[0].readings[0][0] if traces else 0.0
        self.clock = ManualClock(first if start_s is None else start_s)
        self.nvml = ReplayNvml(traces, self.clock)
        self.meter = NvmlMeter(
            list(range(len(traces))), nvml=self.nvml, clock=self.clock, sample_in_thread=False
        )
        self.method = self.meter.method
        self._times = sorted({t for trace in traces for t, _ in trace.readings})

    def begin(self) -> None:
        """Start a window at the current replay time."""
        self.meter.begin()

    def advance(self, seconds: float) -> None:
        """Move replay time forward by ``seconds``, polling at each recorded reading passed."""
        target = self.clock.now_s + seconds
        for t in self._times:
            if self.clock.now_s < t < target:
                self.clock.now_s = t
                self.meter.poll()
        self.clock.now_s = target

    def end(self) -> Measurement:
        """Close the window; the detail says it was a replay."""
        m = self.meter.end()
        return Measurement(m.energy_kwh, m.duration_s, m.method, f"replay: {m.detail}")

    def close(self) -> None:
        """Shut the replayed NVML down."""
        self.meter.close()
