"""``build_meter`` picks NVML, then RAPL (CPU pools), then a labelled estimate."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from scheduler.domain import EngineSpec, MeasurementMethod, ModelSpec, Pool, Profile
from scheduler.errors import EnergyMeterError
from workers.energy import build_meter, gpu_indices_for_pool, meter_for_pool
from workers.energy.estimate import EstimateMeter
from workers.energy.nvml import NvmlMeter
from workers.energy.rapl import RaplMeter, rapl_zones
from workers.energy.replay import H100_TRACE, GpuTrace, ManualClock, ReplayNvml


def fake_rapl(tmp_path: Path) -> Path:
    root = tmp_path / "powercap"
    (root / "intel-rapl:0").mkdir(parents=True)
    (root / "intel-rapl:0" / "name").write_text("package-0\n")
    (root / "intel-rapl:0" / "energy_uj").write_text("12345\n")
    (root / "intel-rapl:0" / "max_energy_range_uj").write_text("262143328850\n")
    return root


def test_this_machine_never_claims_nvml() -> None:
    # Given this machine (no GPU, no pynvml) / When a GPU worker builds its meter
    meter = build_meter([0], profile_power_w=550, gpus=1)
    meter.begin()
    m = meter.end()
    # Then it is a labelled estimate that says why
    if importlib.util.find_spec("pynvml") is None:
        assert isinstance(meter, EstimateMeter)
        assert m.method is MeasurementMethod.ESTIMATED and "NVML" in m.detail
    assert m.method is not MeasurementMethod.MEASURED_NVML or isinstance(meter, NvmlMeter)


def test_this_machine_cpu_pool_gets_rapl_only_if_readable() -> None:
    # Given this machine's real powercap directory / When a CPU worker builds its meter
    meter = build_meter([], profile_power_w=65, gpus=1)
    # Then RAPL exactly when a zone is readable, else the estimate
    if rapl_zones():
        assert meter.method is MeasurementMethod.MEASURED_RAPL
    else:
        assert meter.method is MeasurementMethod.ESTIMATED


def test_nvml_is_chosen_when_it_answers() -> None:
    # Given an NVML backend (a replay) that has the worker's GPU
    backend = ReplayNvml([GpuTrace(H100_TRACE)], ManualClock())
    # When the meter is built / Then it is the NVML meter
    meter = build_meter([0], profile_power_w=550, gpus=1, nvml=backend)
    assert isinstance(meter, NvmlMeter) and meter.method is MeasurementMethod.MEASURED_NVML


def test_cpu_pool_uses_readable_rapl(tmp_path: Path) -> None:
    # Given a readable RAPL tree and no GPUs / When built / Then RAPL
    meter = build_meter([], profile_power_w=65, gpus=1, rapl_root=fake_rapl(tmp_path))
    assert isinstance(meter, RaplMeter)


def test_gpu_pool_whose_nvml_fails_gets_an_estimate_not_cpu_rapl(tmp_path: Path) -> None:
    # Given NVML without the worker's GPU and a readable RAPL tree
    backend = ReplayNvml([GpuTrace(H100_TRACE)], ManualClock())
    # When a worker owning GPU 4 builds its meter
    meter = build_meter(
        [4], profile_power_w=550, gpus=1, nvml=backend, rapl_root=fake_rapl(tmp_path)
    )
    meter.begin()
    m = meter.end()
    # Then RAPL (CPU only) is not passed off as the GPUs' energy: it is an estimate, with reasons
    assert isinstance(meter, EstimateMeter)
    assert "NVML" in m.detail and "RAPL: not used for GPU pools" in m.detail


def test_unknown_preferred_meter_is_an_error() -> None:
    with pytest.raises(EnergyMeterError, match="unknown meter"):
        build_meter([], profile_power_w=1, gpus=1, prefer=("zeus",))


def test_meter_for_pool_estimates_with_the_models_profile(tmp_path: Path) -> None:
    # Given a CPU transformers pool, a model profiled on it, and no RAPL
    pool = Pool(
        name="cpu", gpu="CPU", count=1, engine=EngineSpec("transformers", {"device": "cpu"})
    )
    model = ModelSpec(name="tiny", quality=0.1, profiles={"CPU": Profile(1, 500, 50, 35)})
    # When the worker builds its meter
    meter = meter_for_pool(pool, model, rapl_root=tmp_path / "none")
    # Then it owns no GPU and estimates at the profile's 35 W
    assert gpu_indices_for_pool(pool, 1) == []
    assert isinstance(meter, EstimateMeter) and meter.power_w == 35 and meter.gpus == 1


def test_gpu_indices_come_from_options_then_cuda_visible_devices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a vllm pool with and without explicit indices
    explicit = Pool(
        name="h", gpu="H100", count=8, engine=EngineSpec("vllm", {"gpu_indices": [2, 3]})
    )
    implicit = Pool(name="h", gpu="H100", count=8, engine=EngineSpec("vllm", {}))
    # When / Then options win, then CUDA_VISIBLE_DEVICES, then the first N GPUs
    assert gpu_indices_for_pool(explicit, 2) == [2, 3]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,6")
    assert gpu_indices_for_pool(implicit, 2) == [5, 6]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpu_indices_for_pool(implicit, 2) == [0, 1]


def test_a_cpu_pool_owns_no_gpu_whatever_its_engine_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a pool of GPU type CPU whose engine device is left on auto, with GPUs visible
    pool = Pool(name="cpu", gpu="CPU", count=1, engine=EngineSpec("transformers", {}))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    # When / Then it owns none of them
    assert gpu_indices_for_pool(pool, 1) == []
