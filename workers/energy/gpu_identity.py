"""Which NVML GPUs a worker owns, by identity: ``CUDA_VISIBLE_DEVICES`` entries to NVML indices.

``CUDA_VISIBLE_DEVICES`` may name GPUs by CUDA index, by UUID (``GPU-...``, a unique prefix is
enough, as for CUDA) or by MIG instance (``MIG-...``). NVML numbers GPUs in PCI bus order, CUDA
by default fastest first, so a numeric entry is an NVML index only when ``CUDA_DEVICE_ORDER=
PCI_BUS_ID`` or when every GPU is the same model (fastest-first then falls back to PCI order);
otherwise the numeric mapping is ambiguous and said so. A MIG instance has no energy counter of
its own: its parent GPU's whole counter is apportioned by the instance's share of the GPU's
memory, and the reading is flagged as apportioned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from scheduler.errors import EnergyMeterError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GpuBinding:
    """One visible device: the NVML index of its physical GPU and the share of it we own."""

    index: int
    uuid: str
    share: float = 1.0
    mig_uuid: str | None = None
    note: str = ""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _inventory(nvml: Any) -> list[tuple[int, Any, str, str]]:
    """(index, handle, uuid, name) of every GPU NVML sees, in NVML (PCI bus) order."""
    out = []
    for i in range(int(nvml.nvmlDeviceGetCount())):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        out.append(
            (
                i,
                handle,
                _text(nvml.nvmlDeviceGetUUID(handle)),
                _text(nvml.nvmlDeviceGetName(handle)),
            )
        )
    return out


def _mig(nvml: Any, gpus: list[tuple[int, Any, str, str]], entry: str) -> GpuBinding:
    for index, handle, uuid, _ in gpus:
        try:
            slots = int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))
        except nvml.NVMLError:
            continue  # not a MIG-capable GPU
        for j in range(slots):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, j)
            except nvml.NVMLError:
                continue  # an empty slot
            mig_uuid = _text(nvml.nvmlDeviceGetUUID(mig))
            if mig_uuid.startswith(entry):
                own = float(nvml.nvmlDeviceGetMemoryInfo(mig).total)
                whole = float(nvml.nvmlDeviceGetMemoryInfo(handle).total)
                share = own / whole if whole > 0 else 0.0
                return GpuBinding(
                    index,
                    uuid,
                    share,
                    mig_uuid,
                    f"MIG {mig_uuid}: GPU {index}'s whole-GPU counter apportioned by memory "
                    f"share {share:.3f} (apportioned, not metered per instance)",
                )
    raise EnergyMeterError(
        f"CUDA_VISIBLE_DEVICES names {entry!r}, a MIG instance NVML does not list"
    )


def resolve_visible(visible: str, nvml: Any, *, device_order: str = "") -> list[GpuBinding]:
    """Map a ``CUDA_VISIBLE_DEVICES`` value to the NVML GPUs it names.

    Args:
        visible: The variable's value (comma-separated entries).
        nvml: The NVML backend (``pynvml``, or a replay).
        device_order: ``CUDA_DEVICE_ORDER`` (``PCI_BUS_ID`` or fastest first by default).

    Raises:
        EnergyMeterError: an entry names no GPU NVML sees (or only ambiguously, a UUID prefix).
    """
    gpus = _inventory(nvml)
    pci_order = device_order.upper() == "PCI_BUS_ID" or len({g[3] for g in gpus}) <= 1
    out = []
    for raw in (p.strip() for p in visible.split(",")):
        if not raw:
            continue
        if raw.startswith("MIG-"):
            out.append(_mig(nvml, gpus, raw))
        elif raw.startswith("GPU-"):
            hits = [g for g in gpus if g[2].startswith(raw)]
            if len(hits) != 1:
                what = "no GPU" if not hits else f"{len(hits)} GPUs"
                raise EnergyMeterError(
                    f"CUDA_VISIBLE_DEVICES entry {raw!r} matches {what} NVML lists "
                    "(nvidia-smi -L shows the UUIDs)"
                )
            out.append(GpuBinding(hits[0][0], hits[0][2]))
        elif raw.isdigit():
            k = int(raw)
            if k >= len(gpus):
                raise EnergyMeterError(
                    f"CUDA_VISIBLE_DEVICES names GPU {k}; NVML lists {len(gpus)}"
                )
            note = (
                ""
                if pci_order
                else (
                    f"CUDA index {k} taken as NVML index {k}: GPUs of different models under "
                    "CUDA's fastest-first order may be numbered differently; set "
                    "CUDA_DEVICE_ORDER=PCI_BUS_ID or name GPUs by UUID"
                )
            )
            if note:
                log.warning(note)
            out.append(GpuBinding(k, gpus[k][2], note=note))
        else:
            raise EnergyMeterError(
                f"CUDA_VISIBLE_DEVICES entry {raw!r} is not an index, GPU-UUID or MIG-UUID"
            )
    return out
