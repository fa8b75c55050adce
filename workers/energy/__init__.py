"""Energy meters (NVML, RAPL, labelled estimate) behind one protocol, and ``build_meter``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scheduler.domain import ModelSpec, Pool
from scheduler.errors import EnergyMeterError
from workers.energy.base import EnergyMeter, Measurement
from workers.energy.estimate import EstimateMeter
from workers.energy.rapl import POWERCAP_ROOT

log = logging.getLogger(__name__)

METER_KINDS = ("nvml", "rapl")

__all__ = [
    "METER_KINDS",
    "EnergyMeter",
    "Measurement",
    "build_meter",
    "gpu_indices_for_pool",
    "meter_for_pool",
]


def build_meter(
    gpu_indices: Sequence[int],
    *,
    profile_power_w: float,
    gpus: int,
    prefer: Sequence[str] = METER_KINDS,
    nvml: Any = None,
    rapl_root: Path = POWERCAP_ROOT,
    shares: Mapping[int, float] | None = None,
    notes: Sequence[str] = (),
) -> EnergyMeter:
    """Pick the best meter this machine offers; the choice travels as ``Measurement.method``.

    NVML when the worker owns GPUs and NVML answers for them; else RAPL when the worker owns
    no GPU (a CPU pool: RAPL sees only CPU packages, so it would under-count a GPU pool) and a
    RAPL counter is readable; else an estimate of ``gpus x profile_power_w x busy time``,
    labelled ``estimated`` with the reasons nothing could be measured.

    Args:
        gpu_indices: NVML indices of the GPUs this worker owns (empty for a CPU pool).
        profile_power_w: Mean draw of one GPU (or CPU device) from the model profile, in W.
        gpus: Devices the estimate multiplies ``profile_power_w`` by.
        prefer: Measured methods to try, in order (``nvml``, ``rapl``).
        nvml: NVML backend to use instead of ``pynvml`` (a replay in tests).
        rapl_root: The powercap directory to look for RAPL zones in.
        shares: Per GPU, the fraction of its counter this worker owns (MIG instances).
        notes: Said in NVML measurements' detail.

    Raises:
        EnergyMeterError: ``prefer`` names an unknown method.
    """
    reasons: list[str] = []
    for kind in prefer:
        if kind == "nvml":
            if not gpu_indices:
                reasons.append("NVML: this worker owns no GPU")
                continue
            from workers.energy.nvml import NvmlMeter, load_pynvml

            try:
                return NvmlMeter(
                    gpu_indices,
                    nvml=nvml if nvml is not None else load_pynvml(),
                    shares=shares,
                    notes=notes,
                )
            except EnergyMeterError as e:
                reasons.append(f"NVML: {e}")
        elif kind == "rapl":
            if gpu_indices:
                reasons.append("RAPL: not used for GPU pools (CPU packages only)")
                continue
            from workers.energy.rapl import RaplMeter

            try:
                return RaplMeter(root=rapl_root)
            except EnergyMeterError as e:
                reasons.append(f"RAPL: {e}")
        else:
            raise EnergyMeterError(f"unknown meter {kind!r} in prefer; use {METER_KINDS}")
    reason = "nothing measurable (" + "; ".join(reasons) + ")" if reasons else ""
    log.info("energy will be estimated: %s", reason or "no measured method preferred")
    return EstimateMeter(gpus=gpus, power_w=profile_power_w, reason=reason)


def gpu_indices_for_pool(pool: Pool, gpus: int) -> list[int]:
    """NVML indices of the GPUs a worker of ``pool`` owns.

    In order: the pool's ``engine.gpu_indices`` option; numeric ``CUDA_VISIBLE_DEVICES`` (as
    a first guess: ``meter_for_pool`` resolves every form of it by identity through NVML,
    ``workers.energy.gpu_identity``); the first ``gpus`` GPUs. A pool of GPU type
    ``CPU``, or a ``transformers`` engine on ``device: cpu``, owns none.
    """
    options = pool.engine.options
    if pool.gpu.upper() == "CPU":
        return []  # a CPU pool owns no GPU, whatever its engine's device says
    if pool.engine.kind == "transformers" and str(options.get("device", "auto")) == "cpu":
        return []
    explicit = options.get("gpu_indices")
    if isinstance(explicit, list) and all(isinstance(i, int) for i in explicit):
        return list(explicit)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible:
        parts = [p.strip() for p in visible.split(",") if p.strip()]
        if all(p.isdigit() for p in parts):
            return [int(p) for p in parts]
    return list(range(max(gpus, 0)))


def meter_for_pool(
    pool: Pool,
    model: ModelSpec,
    *,
    gpu_indices: Sequence[int] | None = None,
    prefer: Sequence[str] = METER_KINDS,
    nvml: Any = None,
    rapl_root: Path = POWERCAP_ROOT,
) -> EnergyMeter:
    """``build_meter`` for a worker of ``pool`` running ``model`` (power from its profile).

    The estimate, if it comes to that, uses the profile of ``model`` on ``pool.gpu``
    (``gpus`` x ``power_w``); without such a profile it is 0 W and says so.

    Raises:
        EnergyMeterError: ``prefer`` names an unknown method.
    """
    profile = model.profiles.get(pool.gpu)
    gpus = profile.gpus if profile else 1
    power_w = profile.power_w if profile else 0.0
    indices = list(gpu_indices) if gpu_indices is not None else gpu_indices_for_pool(pool, gpus)
    shares: dict[int, float] = {}
    notes: list[str] = []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if gpu_indices is None and indices and visible and "gpu_indices" not in pool.engine.options:
        found = _by_identity(visible, nvml)  # UUIDs, MIG instances, CUDA vs NVML order
        if found is not None:
            indices, shares, notes = found
    return build_meter(
        indices,
        profile_power_w=power_w,
        gpus=gpus,
        prefer=prefer,
        nvml=nvml,
        rapl_root=rapl_root,
        shares=shares,
        notes=notes,
    )


def _by_identity(visible: str, nvml: Any) -> tuple[list[int], dict[int, float], list[str]] | None:
    """NVML indices, shares and notes of ``CUDA_VISIBLE_DEVICES``; None when NVML is absent."""
    from workers.energy.gpu_identity import resolve_visible
    from workers.energy.nvml import load_pynvml

    try:
        backend = nvml if nvml is not None else load_pynvml()
        backend.nvmlInit()
        try:
            bindings = resolve_visible(
                visible, backend, device_order=os.environ.get("CUDA_DEVICE_ORDER", "")
            )
        finally:
            backend.nvmlShutdown()
    except EnergyMeterError as e:
        log.warning("GPUs of CUDA_VISIBLE_DEVICES=%s not resolved by identity: %s", visible, e)
        return None
    except Exception as e:  # NVML itself failing: build_meter reports it with the reasons
        log.warning("NVML could not list GPUs (%s)", e)
        return None
    indices: list[int] = []
    shares: dict[int, float] = {}
    for b in bindings:
        if b.index not in shares:
            indices.append(b.index)
        shares[b.index] = min(1.0, shares.get(b.index, 0.0) + b.share)
    return indices, shares, [b.note for b in bindings if b.note]
