"""Provenance of a slot's carbon figure: which provider supplied it, synthetic or not, and why a
fallback was used (docs/pricing.md, "Provenance")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.domain import CarbonFactor
from scheduler.forecasts.base import carbon_factor_of

SYNTHETIC_PROVIDERS = frozenset({"synthetic"})
"""Providers whose figures are generated (plausible shapes), not the grid's: rows priced with
them say ``synthetic`` and are never presented as first-hand."""


@dataclass(frozen=True, slots=True)
class CarbonProvenance:
    """Where one slot's carbon figure came from (``SlotSignal``'s provenance fields)."""

    provider: str | None
    synthetic: bool
    fallback_reason: str | None
    carbon_factor: str


def carbon_provenance(
    label: str | None,
    error: str | None,
    configured: tuple[str, Mapping[str, Any]] | None,
    fallback_options: Mapping[str, Any],
) -> CarbonProvenance:
    """Provenance of a carbon value from its collector label.

    Args:
        label: ``name`` (first-hand), ``cache:name`` (an earlier fetch of this slot),
            ``persistence:name`` or ``fallback:name`` (the source's fallback provider).
        error: why the configured provider gave nothing (None: it answered, but not for
            this slot).
        configured: the configured carbon source's provider name and options (None: none).
        fallback_options: options of the source's ``fallback`` provider.

    Returns:
        The provenance; ``fallback_reason`` starts with its kind (``fallback-provider:``,
        ``cache:`` or ``persistence:``, see ``fallback_kind``); its factor type is that of the provider that supplied the value (a
        synthetic fallback for a marginal source is an average figure, and says so).
    """
    if configured is None or label is None:
        return CarbonProvenance(None, False, None, CarbonFactor.AVERAGE_DIRECT.value)
    configured_name, options = configured
    how, _, name = label.rpartition(":")
    why = error or f"{configured_name} does not cover this slot"
    if how == "fallback":
        return CarbonProvenance(
            name,
            name in SYNTHETIC_PROVIDERS,
            f"fallback-provider: {why}; fallback provider {name}",
            carbon_factor_of(name, fallback_options),
        )
    reasons = {
        "cache": f"cache: {why}; the value cached for this slot by an earlier fetch",
        "persistence": f"persistence: {why}; the same time on an earlier day",
    }
    return CarbonProvenance(
        name,
        name in SYNTHETIC_PROVIDERS,
        reasons.get(how),
        carbon_factor_of(configured_name, options),
    )


def fallback_kind(reason: str | None) -> str | None:
    """The kind a fallback reason names (``fallback-provider``, ``cache``, ``persistence``)."""
    if not reason:
        return None
    return reason.split(":", 1)[0]
