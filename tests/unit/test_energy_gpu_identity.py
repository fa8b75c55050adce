"""NVML by identity: CUDA_VISIBLE_DEVICES UUIDs, MIG instances and CUDA order, through the replay."""

from __future__ import annotations

import pytest

from scheduler.domain import MeasurementMethod, ModelSpec, Pool, Profile
from scheduler.errors import EnergyMeterError
from workers.energy import meter_for_pool
from workers.energy.gpu_identity import resolve_visible
from workers.energy.nvml import MJ_PER_KWH, NvmlMeter
from workers.energy.replay import H100_TRACE, GpuTrace, ManualClock, ReplayNvml

GIB = 2**30
MIG_A, MIG_B = "MIG-aaaa1111-2222", "MIG-bbbb3333-4444"
TRACES = [
    GpuTrace(H100_TRACE, uuid="GPU-0f0f-aaaa"),
    GpuTrace(H100_TRACE, uuid="GPU-1e1e-bbbb", mig=((MIG_A, 20 * GIB), (MIG_B, 40 * GIB))),
    GpuTrace(H100_TRACE, uuid="GPU-2d2d-cccc"),
]
MODEL = ModelSpec(
    name="m",
    quality=0.5,
    profiles={"H100": Profile(gpus=1, prefill_tok_s=1000, decode_tok_s=100, power_w=700)},
)
POOL = Pool(name="h100", gpu="H100", count=3)


def test_uuids_and_uuid_prefixes_name_their_nvml_gpus_in_the_order_given() -> None:
    nvml = ReplayNvml(TRACES, ManualClock())
    found = resolve_visible("GPU-2d2d,GPU-0f0f-aaaa", nvml)
    assert [(b.index, b.uuid, b.share) for b in found] == [
        (2, "GPU-2d2d-cccc", 1.0),
        (0, "GPU-0f0f-aaaa", 1.0),
    ]
    with pytest.raises(EnergyMeterError, match="matches no GPU"):
        resolve_visible("GPU-ffff", nvml)


def test_numeric_entries_are_exact_for_identical_gpus_and_flagged_for_mixed_ones() -> None:
    same = resolve_visible("2,0", ReplayNvml(TRACES, ManualClock()))
    assert [(b.index, b.note) for b in same] == [(2, ""), (0, "")]
    mixed = [TRACES[0], GpuTrace(H100_TRACE, uuid="GPU-x", name="NVIDIA A100-SXM4-40GB")]
    flagged = resolve_visible("1", ReplayNvml(mixed, ManualClock()))
    assert "fastest-first" in flagged[0].note and "CUDA_DEVICE_ORDER=PCI_BUS_ID" in flagged[0].note
    exact = resolve_visible("1", ReplayNvml(mixed, ManualClock()), device_order="PCI_BUS_ID")
    assert exact[0].note == ""


def test_a_mig_instance_is_its_parent_gpu_apportioned_by_memory_and_labelled() -> None:
    # Given a worker on MIG instance B (40 of 80 GiB) of GPU 1
    clock = ManualClock(5.0)
    nvml = ReplayNvml(TRACES, clock)
    (binding,) = resolve_visible(MIG_B, nvml)
    assert binding.index == 1 and binding.mig_uuid == MIG_B and binding.share == 0.5
    # When the meter measures a window with that share
    meter = NvmlMeter(
        [1],
        nvml=nvml,
        clock=clock,
        sample_in_thread=False,
        shares={1: binding.share},
        notes=[binding.note],
    )
    meter.begin()
    clock.advance(20.0)
    m = meter.end()
    # Then it books half the whole-GPU counter delta, and says so
    whole = TRACES[1].energy_mj(25.0) - TRACES[1].energy_mj(5.0)
    assert m.energy_kwh * MJ_PER_KWH == pytest.approx(whole / 2, rel=1e-6)
    assert "apportioned" in m.detail and MIG_B in m.detail


def test_meter_for_pool_resolves_cuda_visible_devices_by_identity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = ManualClock(5.0)
    nvml = ReplayNvml(TRACES, clock)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-2d2d-cccc")
    meter = meter_for_pool(POOL, MODEL, nvml=nvml)
    assert isinstance(meter, NvmlMeter) and meter.gpu_indices == (2,)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{MIG_A}")
    meter = meter_for_pool(POOL, MODEL, nvml=nvml)
    assert isinstance(meter, NvmlMeter) and meter.gpu_indices == (1,)
    assert meter.shares == {1: 0.25} and meter.method is MeasurementMethod.MEASURED_NVML
