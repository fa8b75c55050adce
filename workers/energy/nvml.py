"""NVML energy meter: total-energy counters (Volta+) per GPU, power sampling where unsupported."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from scheduler.domain import MeasurementMethod
from scheduler.errors import EnergyMeterError
from workers.energy.base import Measurement
from workers.energy.polling import PollingThread

log = logging.getLogger(__name__)

NVML_ERROR_NOT_SUPPORTED = 3
COUNTER_MODULUS_MJ = 2**64  # nvmlDeviceGetTotalEnergyConsumption is an unsigned long long
MJ_PER_KWH = 3.6e9


def load_pynvml() -> Any:
    """Import ``pynvml`` (package ``nvidia-ml-py``) and return the module as the NVML backend.

    Raises:
        EnergyMeterError: the package is not installed.
    """
    try:
        import pynvml
    except ImportError as e:
        raise EnergyMeterError(
            f"NVML is not available ({e}); install the gpu extra: pip install 'gridshift[gpu]'"
        ) from e
    return pynvml


class NvmlMeter:
    """Measures the energy of the GPUs a worker owns through NVML.

    On GPUs with a total-energy counter (Volta and newer) the window's energy is the counter
    delta in mJ (modulo 2**64, so a wrap is harmless). On GPUs without it, power
    (``nvmlDeviceGetPowerUsage``, mW) is sampled every ``sample_interval_s`` in a background
    thread and integrated over time with the trapezoid rule; the detail says which GPUs were
    sampled. The NVML calls go through ``nvml`` (the ``pynvml`` module by default), so a replay
    backend can drive exactly this code without a GPU.
    """

    method = MeasurementMethod.MEASURED_NVML

    def __init__(
        self,
        gpu_indices: Sequence[int],
        *,
        nvml: Any = None,
        clock: Callable[[], float] = time.monotonic,
        sample_interval_s: float = 0.1,
        sample_in_thread: bool = True,
        max_power_w_per_gpu: float = 3000.0,
        shares: Mapping[int, float] | None = None,
        notes: Sequence[str] = (),
    ) -> None:
        """Initialise NVML and find out, per GPU, whether its energy counter works.

        Args:
            gpu_indices: NVML indices of the GPUs this worker owns.
            nvml: NVML backend (default: ``pynvml``, imported now).
            clock: Monotonic clock in seconds.
            sample_interval_s: Power-sampling period for GPUs without an energy counter.
            sample_in_thread: Sample in a background thread (replays call ``poll`` instead).
            max_power_w_per_gpu: A counter delta implying more than this is treated as a
                counter reset (driver reload) and refused rather than booked.
            shares: Per GPU index, the fraction of its energy this worker owns (a MIG
                instance: its memory share of the whole-GPU counter); 1 when absent.
            notes: Said in every measurement's detail (MIG apportioning, ambiguous indices).

        Raises:
            EnergyMeterError: NVML cannot be initialised, a GPU index is invalid, or a GPU
                offers neither an energy counter nor power readings.
        """
        if not gpu_indices:
            raise EnergyMeterError("NvmlMeter needs at least one GPU index (the worker's GPUs)")
        self._nvml = nvml if nvml is not None else load_pynvml()
        self._clock = clock
        self.sample_interval_s = sample_interval_s
        self.sample_in_thread = sample_in_thread
        self.max_power_w_per_gpu = max_power_w_per_gpu
        self.gpu_indices = tuple(gpu_indices)
        self.shares = {i: min(1.0, max(0.0, float(v))) for i, v in (shares or {}).items()}
        self.notes = tuple(n for n in notes if n)
        self._call("nvmlInit")
        self._handles = {i: self._call("nvmlDeviceGetHandleByIndex", i) for i in self.gpu_indices}
        self.counter_gpus: tuple[int, ...] = tuple(
            i for i in self.gpu_indices if self._has_counter(i)
        )
        self.sampled_gpus: tuple[int, ...] = tuple(
            i for i in self.gpu_indices if i not in self.counter_gpus
        )
        for i in self.sampled_gpus:
            self._power_mw(i)  # fail now, not at the end of a shard, if power is unreadable too
        self._lock = threading.Lock()
        self._poller = PollingThread(
            self.poll, name="nvml-power", log=log, failure_message="NVML power sample failed: %s"
        )
        self._t0_s: float | None = None
        self._counter_start_mj: dict[int, int] = {}
        self._sample_energy_mj: dict[int, float] = {}
        self._last_sample: dict[int, tuple[float, float]] = {}

    # -- NVML calls, with errors translated at the boundary

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self._nvml, name)(*args)
        except self._nvml.NVMLError as e:
            raise EnergyMeterError(
                f"NVML {name}{args} failed: {e}. Check the NVIDIA driver and that the worker's "
                "GPU indices exist (nvidia-smi -L)"
            ) from e

    def _has_counter(self, index: int) -> bool:
        try:
            self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handles[index])
        except self._nvml.NVMLError as e:
            if getattr(e, "value", None) == NVML_ERROR_NOT_SUPPORTED:
                log.info("GPU %d has no NVML energy counter (pre-Volta?): sampling power", index)
                return False
            raise EnergyMeterError(f"NVML energy counter of GPU {index} failed: {e}") from e
        return True

    def _counter_mj(self, index: int) -> int:
        return int(self._call("nvmlDeviceGetTotalEnergyConsumption", self._handles[index]))

    def _power_mw(self, index: int) -> float:
        return float(self._call("nvmlDeviceGetPowerUsage", self._handles[index]))

    # -- the window

    def begin(self) -> None:
        """Start a window: read the counters and take the first power samples.

        Raises:
            EnergyMeterError: NVML could not be read.
        """
        self._poller.stop()
        with self._lock:
            now = self._clock()
            self._t0_s = now
            self._counter_start_mj = {i: self._counter_mj(i) for i in self.counter_gpus}
            self._sample_energy_mj = {i: 0.0 for i in self.sampled_gpus}
            self._last_sample = {i: (now, self._power_mw(i)) for i in self.sampled_gpus}
        if self.sampled_gpus and self.sample_in_thread:
            self._poller.start(self.sample_interval_s)

    def poll(self) -> None:
        """Take one power sample of the GPUs without a counter and integrate it.

        Raises:
            EnergyMeterError: NVML could not be read, or no window is open.
        """
        with self._lock:
            if self._t0_s is None:
                raise EnergyMeterError("poll() outside a window: call begin() first")
            now = self._clock()
            for i in self.sampled_gpus:
                power_mw = self._power_mw(i)
                t_prev, p_prev = self._last_sample[i]
                self._sample_energy_mj[i] += (p_prev + power_mw) / 2.0 * max(0.0, now - t_prev)
                self._last_sample[i] = (now, power_mw)

    def end(self) -> Measurement:
        """Close the window and return the GPUs' energy, labelled ``measured-nvml``.

        Raises:
            EnergyMeterError: no window is open, NVML could not be read, or a counter jumped
                implausibly (a reset), so the window's energy is unknown.
        """
        self._poller.stop()
        if self._t0_s is None:
            raise EnergyMeterError("end() without begin(): open a window first")
        self.poll()
        with self._lock:
            duration_s = max(0.0, self._clock() - self._t0_s)
            per_gpu_mj: dict[int, float] = dict(self._sample_energy_mj)
            for i, start in self._counter_start_mj.items():
                delta = (self._counter_mj(i) - start) % COUNTER_MODULUS_MJ
                if duration_s > 0 and delta / 1000.0 / duration_s > self.max_power_w_per_gpu:
                    raise EnergyMeterError(
                        f"GPU {i}'s energy counter moved {delta} mJ in {duration_s:.1f} s, more "
                        f"than {self.max_power_w_per_gpu:g} W: the counter was reset (driver "
                        "reload?); this window's energy is unknown, book an estimate instead"
                    )
                per_gpu_mj[i] = float(delta)
            self._t0_s = None
        per_gpu_mj = {i: mj * self.shares.get(i, 1.0) for i, mj in per_gpu_mj.items()}
        total_mj = sum(per_gpu_mj.values())
        parts = []
        if self.counter_gpus:
            parts.append(f"energy counter on GPU {','.join(map(str, self.counter_gpus))}")
        if self.sampled_gpus:
            parts.append(
                f"power sampled every {self.sample_interval_s:g} s on GPU "
                f"{','.join(map(str, self.sampled_gpus))} (no energy counter)"
            )
        detail = "NVML " + "; ".join([*parts, *self.notes]) + f"; {total_mj / 1000.0:.1f} J"
        return Measurement(
            energy_kwh=total_mj / MJ_PER_KWH,
            duration_s=duration_s,
            method=self.method,
            detail=detail,
        )

    def close(self) -> None:
        """Stop sampling and shut NVML down."""
        self._poller.stop()
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError as e:
            log.warning("nvmlShutdown failed: %s", e)
