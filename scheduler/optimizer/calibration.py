"""Self-calibrating profiles: what workers observed per model and GPU type against fleet.yaml.

Pure. The observations come from the ledger (``scheduler.store.profiles``): every attempt books
its busy time (the meter's window around the engine run, model load excluded) and its tokens;
attempts whose energy was measured (NVML, RAPL) also give energy per token. Against the
configured profile's token model (``scheduler.optimizer.pricing.energy_from_tokens``):

    time_ratio   = observed GPU-seconds / configured GPU-seconds for the same tokens
    energy_ratio = measured IT energy / configured IT energy for the same tokens

A calibrated profile divides both throughputs by ``time_ratio`` and scales ``power_w`` by
``energy_ratio / time_ratio`` (so calibrated GPU-hours x power = measured energy); without
measured energy only the throughputs change and the power stays as configured. A calibration
needs ``MIN_ATTEMPTS`` attempts; fewer leave the profile as configured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from scheduler.domain import Fleet, Profile
from scheduler.optimizer.pricing import energy_from_tokens

MIN_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Observed:
    """Sums over ledger rows of one (model, GPU type).

    Attributes:
        attempts: ledger rows.
        input_tokens: prompt tokens of all rows.
        output_tokens: completion tokens of all rows.
        busy_s: busy (engine) seconds of all rows, per replica.
        measured_attempts: rows with measured energy.
        measured_input_tokens: prompt tokens of the measured rows.
        measured_output_tokens: completion tokens of the measured rows.
        measured_it_kwh: measured IT energy of those rows.
    """

    attempts: int
    input_tokens: float
    output_tokens: float
    busy_s: float
    measured_attempts: int = 0
    measured_input_tokens: float = 0.0
    measured_output_tokens: float = 0.0
    measured_it_kwh: float = 0.0


@dataclass(frozen=True, slots=True)
class Calibration:
    """Observed against configured for one (model, GPU type).

    ``time_ratio``/``energy_ratio`` are None when there is no evidence (no tokens, no measured
    energy); ``calibrated`` is the profile the planner uses when calibration is on.
    """

    model: str
    gpu: str
    configured: Profile
    observed: Observed
    observed_tok_s: float | None
    observed_j_per_token: float | None
    configured_j_per_token: float | None
    time_ratio: float | None
    energy_ratio: float | None
    calibrated: Profile
    enough: bool


def calibrate(model: str, gpu: str, profile: Profile, observed: Observed) -> Calibration:
    """Compare ``observed`` with ``profile`` and derive the calibrated profile (module rules)."""
    tokens = observed.input_tokens + observed.output_tokens
    configured = energy_from_tokens(profile, 1.0, observed.input_tokens, observed.output_tokens)
    configured_gpu_s = configured.gpu_hours * 3600.0
    observed_gpu_s = observed.busy_s * profile.gpus
    time_ratio = observed_gpu_s / configured_gpu_s if configured_gpu_s > 0 and tokens else None
    measured = energy_from_tokens(
        profile, 1.0, observed.measured_input_tokens, observed.measured_output_tokens
    )
    energy_ratio = (
        observed.measured_it_kwh / measured.it_kwh
        if observed.measured_attempts and measured.it_kwh > 0
        else None
    )
    measured_tokens = observed.measured_input_tokens + observed.measured_output_tokens
    enough = observed.attempts >= MIN_ATTEMPTS and time_ratio is not None and time_ratio > 0
    calibrated = profile
    if enough and time_ratio is not None:
        power = profile.power_w
        if energy_ratio is not None and observed.measured_attempts >= MIN_ATTEMPTS:
            power = profile.power_w * energy_ratio / time_ratio
        calibrated = dataclasses.replace(
            profile,
            prefill_tok_s=profile.prefill_tok_s / time_ratio,
            decode_tok_s=profile.decode_tok_s / time_ratio,
            power_w=power,
        )
    return Calibration(
        model=model,
        gpu=gpu,
        configured=profile,
        observed=observed,
        observed_tok_s=tokens / observed.busy_s if observed.busy_s > 0 else None,
        observed_j_per_token=observed.measured_it_kwh * 3.6e6 / measured_tokens
        if measured_tokens
        else None,
        configured_j_per_token=configured.it_kwh * 3.6e6 / tokens if tokens else None,
        time_ratio=time_ratio,
        energy_ratio=energy_ratio,
        calibrated=calibrated,
        enough=enough,
    )


def calibrations(fleet: Fleet, observed: Mapping[tuple[str, str], Observed]) -> list[Calibration]:
    """One calibration per (model, GPU type) that the fleet configures and workers observed."""
    out = []
    for (model_name, gpu), obs in sorted(observed.items()):
        model = next((m for m in fleet.models if m.name == model_name), None)
        profile = model.profiles.get(gpu) if model else None
        if profile is not None:
            out.append(calibrate(model_name, gpu, profile, obs))
    return out


def calibrated_fleet(fleet: Fleet, found: list[Calibration]) -> Fleet:
    """The fleet with each calibrated profile (enough evidence) in place of the configured one."""
    by_model: dict[str, dict[str, Profile]] = {}
    for c in found:
        if c.enough:
            by_model.setdefault(c.model, {})[c.gpu] = c.calibrated
    if not by_model:
        return fleet
    models = tuple(
        dataclasses.replace(m, profiles={**m.profiles, **by_model[m.name]})
        if m.name in by_model
        else m
        for m in fleet.models
    )
    return dataclasses.replace(fleet, models=models)
