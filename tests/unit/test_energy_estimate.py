"""Energy estimates: busy time x profile power, and the contract's token formula."""

from __future__ import annotations

import pytest

from scheduler.domain import MeasurementMethod, Profile
from scheduler.errors import EnergyMeterError
from workers.energy.estimate import EstimateMeter, estimate_from_duration, estimate_from_tokens
from workers.energy.replay import ManualClock

H100_8B = Profile(gpus=1, prefill_tok_s=30000, decode_tok_s=3500, power_w=550)


def test_duration_estimate_is_gpus_times_power_times_time() -> None:
    # Given 2 GPUs at 550 W busy for one hour / When estimated
    m = estimate_from_duration(gpus=2, power_w=550, duration_s=3600, reason="no NVML")
    # Then it is 1.1 kWh, labelled as an estimate with its basis and reason
    assert m.energy_kwh == pytest.approx(1.1)
    assert m.method is MeasurementMethod.ESTIMATED and m.estimated
    assert "550 W" in m.detail and "no NVML" in m.detail


def test_token_estimate_follows_the_planning_contract() -> None:
    # Given 360 s of prefill (10.8M tokens) and 720 s of decode (2.52M tokens) on one H100
    m = estimate_from_tokens(H100_8B, input_tokens=10_800_000, output_tokens=2_520_000)
    # Then gpu_hours = 0.3 and it_kwh = 0.3 x 550 / 1000
    assert m.energy_kwh == pytest.approx(0.165)
    assert m.duration_s == pytest.approx(1080.0)
    assert m.method is MeasurementMethod.ESTIMATED_PROFILE and "GPU-h" in m.detail
    assert m.estimated


def test_two_gpu_replica_doubles_energy_but_not_wall_time() -> None:
    # Given the same work on a 2-GPU replica with the same throughput
    two = Profile(gpus=2, prefill_tok_s=30000, decode_tok_s=3500, power_w=550)
    one_m = estimate_from_tokens(H100_8B, input_tokens=3_000_000, output_tokens=700_000)
    two_m = estimate_from_tokens(two, input_tokens=3_000_000, output_tokens=700_000)
    # Then energy doubles and the replica's time is the same
    assert two_m.energy_kwh == pytest.approx(2 * one_m.energy_kwh)
    assert two_m.duration_s == pytest.approx(one_m.duration_s)


def test_more_output_tokens_cost_more_than_the_same_input_tokens() -> None:
    # Given decode is slower than prefill / When / Then output tokens dominate
    more_in = estimate_from_tokens(H100_8B, input_tokens=2000, output_tokens=1000)
    more_out = estimate_from_tokens(H100_8B, input_tokens=1000, output_tokens=2000)
    assert more_out.energy_kwh > more_in.energy_kwh


def test_estimate_meter_times_its_window() -> None:
    # Given an estimate meter on a manual clock
    clock = ManualClock(100.0)
    meter = EstimateMeter(gpus=1, power_w=400, clock=clock, reason="no counters")
    # When a 90 s window runs
    meter.begin()
    clock.advance(90.0)
    m = meter.end()
    # Then it is 400 W x 90 s, labelled
    assert m.energy_kwh == pytest.approx(400 * 90 / 3.6e6)
    assert m.duration_s == 90.0 and m.estimated and "no counters" in m.detail


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(EnergyMeterError):
        estimate_from_duration(gpus=1, power_w=-5, duration_s=1)
    with pytest.raises(EnergyMeterError, match="fleet.yaml"):
        estimate_from_tokens(Profile(1, 0, 10, 100), input_tokens=1, output_tokens=1)
    with pytest.raises(EnergyMeterError, match="begin"):
        EstimateMeter(gpus=1, power_w=1).end()
