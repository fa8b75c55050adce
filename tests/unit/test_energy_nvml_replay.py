"""The NVML meter's logic, driven by replays of recorded counter readings (no GPU here)."""

from __future__ import annotations

import time

import pytest

from scheduler.domain import MeasurementMethod
from scheduler.errors import EnergyMeterError
from workers.energy.nvml import COUNTER_MODULUS_MJ, MJ_PER_KWH, NvmlMeter
from workers.energy.replay import H100_TRACE, GpuTrace, ManualClock, ReplayMeter, ReplayNvml

H100 = GpuTrace(H100_TRACE)


def recorded_mj(trace: GpuTrace, t0_s: float, t1_s: float) -> float:
    """Energy between two times straight from the recorded readings."""
    return trace.energy_mj(t1_s) - trace.energy_mj(t0_s)


def window(meter: ReplayMeter, start_s: float, seconds: float) -> float:
    """Run one window on the replay and return its energy in mJ."""
    meter.clock.now_s = start_s
    meter.begin()
    meter.advance(seconds)
    return meter.end().energy_kwh * MJ_PER_KWH


def test_counter_delta_is_the_windows_energy() -> None:
    # Given one H100 replayed from its recorded counter
    meter = ReplayMeter([H100])
    # When a window runs from 3 s to 25 s
    meter.clock.now_s = 3.0
    meter.begin()
    meter.advance(22.0)
    measurement = meter.end()
    # Then the energy is the counter delta, labelled as measured by NVML over 22 s
    assert measurement.method is MeasurementMethod.MEASURED_NVML
    assert not measurement.estimated
    assert measurement.duration_s == pytest.approx(22.0)
    assert measurement.energy_kwh * MJ_PER_KWH == pytest.approx(recorded_mj(H100, 3.0, 25.0))
    assert "energy counter on GPU 0" in measurement.detail and "replay" in measurement.detail


def test_loaded_h100_window_averages_between_550_and_700_watts() -> None:
    # Given the H100 trace under load (5 s to 26 s)
    meter = ReplayMeter([H100])
    # When measured
    energy_mj = window(meter, 5.0, 21.0)
    # Then the mean power is what an H100 draws in batch decode
    assert 550.0 <= energy_mj / 1000.0 / 21.0 <= 700.0


def test_multi_gpu_energy_is_the_sum_of_each_gpus_delta() -> None:
    # Given two GPUs, the second drawing 80 % of the first
    second = GpuTrace([(t, 9_000_000 + 0.8 * (e - H100_TRACE[0][1])) for t, e in H100_TRACE])
    meter = ReplayMeter([H100, second])
    # When a window runs from 2 s to 20 s
    energy_mj = window(meter, 2.0, 18.0)
    # Then it is the sum of both counters' deltas
    expected = recorded_mj(H100, 2.0, 20.0) + recorded_mj(second, 2.0, 20.0)
    assert energy_mj == pytest.approx(expected)
    assert energy_mj == pytest.approx(1.8 * recorded_mj(H100, 2.0, 20.0))


def test_counter_wrapping_past_two_to_the_64_is_harmless() -> None:
    # Given the same GPU whose raw counter sits just below 2**64 and wraps mid-window
    start_raw = H100.energy_mj(4.0)
    wrapping = GpuTrace(H100_TRACE, counter_offset_mj=COUNTER_MODULUS_MJ - int(start_raw) - 5_000)
    meter = ReplayMeter([wrapping])
    # When a window runs across the wrap
    energy_mj = window(meter, 4.0, 10.0)
    # Then the energy is the same as without the wrap (within rounding to whole mJ)
    assert energy_mj == pytest.approx(recorded_mj(H100, 4.0, 14.0), abs=2)


def test_gpu_without_counter_falls_back_to_power_sampling() -> None:
    # Given a pre-Volta GPU: counter NOT_SUPPORTED, power readable
    meter = ReplayMeter([GpuTrace(H100_TRACE, counter_supported=False)])
    # When a window runs from 3 s to 27 s, sampled at each recorded second
    sampled_mj = window(meter, 3.0, 24.0)
    m = meter.meter
    # Then the integrated power is within 3 % of what the counter would have said
    assert m.sampled_gpus == (0,) and m.counter_gpus == ()
    assert sampled_mj == pytest.approx(recorded_mj(H100, 3.0, 27.0), rel=0.03)


def test_mixed_gpus_sum_counter_and_sampled_energy_and_say_so() -> None:
    # Given one GPU with a counter and one without
    meter = ReplayMeter([H100, GpuTrace(H100_TRACE, counter_supported=False)])
    # When measured
    meter.clock.now_s = 5.0
    meter.begin()
    meter.advance(20.0)
    measurement = meter.end()
    # Then both are counted and the detail names each method
    exact = recorded_mj(H100, 5.0, 25.0)
    assert measurement.energy_kwh * MJ_PER_KWH == pytest.approx(2 * exact, rel=0.02)
    assert "energy counter on GPU 0" in measurement.detail
    assert "power sampled" in measurement.detail and "GPU 1" in measurement.detail


def test_counter_reset_is_refused_not_booked() -> None:
    # Given a counter that goes backwards (driver reload) during the window
    reset = GpuTrace(
        [(0.0, 5_000_000_000.0), (10.0, 5_006_000_000.0), (11.0, 200.0), (20.0, 6_000_000.0)]
    )
    meter = ReplayMeter([reset])
    meter.begin()
    meter.advance(15.0)
    # When / Then closing the window says the energy is unknown
    with pytest.raises(EnergyMeterError, match="reset"):
        meter.end()


def test_unknown_gpu_index_is_a_typed_meter_error() -> None:
    # Given a replay with one GPU
    backend = ReplayNvml([H100], ManualClock())
    # When / Then asking for GPU 3 translates NVML's error
    with pytest.raises(EnergyMeterError, match="nvidia-smi"):
        NvmlMeter([3], nvml=backend)


def test_end_without_begin_is_an_error() -> None:
    # Given a fresh meter / When / Then
    with pytest.raises(EnergyMeterError, match="begin"):
        ReplayMeter([H100]).end()


def test_background_sampling_thread_integrates_power_in_real_time() -> None:
    # Given a pre-Volta GPU replayed against the real clock (first second of the trace: ~72 W)
    t_start = time.monotonic()
    clock = lambda: time.monotonic() - t_start  # noqa: E731
    trace = GpuTrace(H100_TRACE, counter_supported=False)
    meter = NvmlMeter([0], nvml=ReplayNvml([trace], clock), clock=clock, sample_interval_s=0.02)
    # When a 0.3 s window runs with the sampling thread
    meter.begin()
    time.sleep(0.3)
    measurement = meter.end()
    meter.close()
    # Then the energy is that power over the measured duration
    power_w = trace.power_mw(0.1) / 1000.0
    assert measurement.duration_s >= 0.3
    assert measurement.energy_kwh * 3.6e6 == pytest.approx(
        power_w * measurement.duration_s, rel=0.05
    )
