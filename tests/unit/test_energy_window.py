"""A meter that fails books a labelled estimate (no re-run); a model load is said in the window."""

from __future__ import annotations

from scheduler.domain import MeasurementMethod, ModelSpec, Pool, Profile
from scheduler.errors import EnergyMeterError
from workers.energy.base import Measurement
from workers.energy.window import begin_safely, window_energy

MODEL = ModelSpec(
    name="m",
    quality=0.5,
    profiles={"H100": Profile(gpus=2, prefill_tok_s=1000, decode_tok_s=100, power_w=300)},
)
POOL = Pool(name="p", gpu="H100", count=2)


class BrokenMeter:
    method = MeasurementMethod.MEASURED_NVML

    def __init__(self, fail_on: str) -> None:
        self.fail_on = fail_on

    def begin(self) -> None:
        if self.fail_on == "begin":
            raise EnergyMeterError("NVML_ERROR_GPU_IS_LOST")

    def end(self) -> Measurement:
        if self.fail_on == "end":
            raise EnergyMeterError("counter went backwards")
        return Measurement(0.5, 10.0, MeasurementMethod.MEASURED_NVML, "nvml")


def test_a_meter_error_books_a_labelled_estimate_instead_of_rerunning() -> None:
    for where in ("begin", "end"):
        meter = BrokenMeter(where)
        error = begin_safely(meter)
        assert (error is not None) == (where == "begin")
        m = window_energy(meter, error, MODEL, POOL, window_s=36.0, load_s=0.0)
        # 2 GPUs x 300 W x 36 s = 21,600 J = 0.006 kWh, an estimate saying why
        assert m.method is MeasurementMethod.ESTIMATED and m.estimated
        assert abs(m.energy_kwh - 0.006) < 1e-12 and m.duration_s == 36.0
        assert "meter failed" in m.detail and "instead of re-running" in m.detail


def test_a_measured_window_keeps_its_figure_and_says_it_includes_the_model_load() -> None:
    meter = BrokenMeter("never")
    m = window_energy(meter, begin_safely(meter), MODEL, POOL, window_s=40.0, load_s=12.5)
    assert m.method is MeasurementMethod.MEASURED_NVML and m.energy_kwh == 0.5
    assert "includes loading model m (12.5 s)" in m.detail
