"""The gridshift error hierarchy; every class says when it is raised."""

from __future__ import annotations

from dataclasses import dataclass


class GridshiftError(Exception):
    """Raised when gridshift cannot do what was asked; base of every project error."""


class NotFound(GridshiftError):
    """Raised when a file, batch, plan or other object does not exist (or is not yours)."""


class PermissionDenied(GridshiftError):
    """Raised when a key lacks the rights for an action (e.g. an admin-only endpoint)."""


class Unauthenticated(GridshiftError):
    """Raised when a request carries no API key or an unknown one."""


@dataclass(frozen=True, slots=True)
class LineError:
    """One problem in one line of an input file (1-based line number)."""

    line: int | None
    code: str
    message: str
    param: str | None = None


class InvalidInput(GridshiftError):
    """Raised when input is malformed; carries line-numbered errors where a file is at fault."""

    def __init__(self, message: str, errors: list[LineError] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class LimitExceeded(InvalidInput):
    """Raised when input exceeds a configured limit (bytes per file, requests per batch)."""


class QuotaExceeded(GridshiftError):
    """Raised when a tenant would exceed a quota (files, stored bytes, batches in flight)."""

    retry_after_s = 60


class InvalidTransition(GridshiftError):
    """Raised when an object is asked to move to a status its current status does not allow."""


class ConfigError(GridshiftError):
    """Raised when settings or ``fleet.yaml`` are invalid."""


class PlanningError(GridshiftError):
    """Raised when the planner cannot produce a plan (solver failure, inconsistent inputs)."""


class ForecastUnavailable(GridshiftError):
    """Raised when a forecast provider cannot deliver signals and no fallback exists."""


class EngineError(GridshiftError):
    """Raised when an inference engine fails in a way retrying will not fix."""


class TransientEngineError(EngineError):
    """Raised when an inference engine fails in a way that a retry may fix (timeouts, 5xx)."""


class EnergyMeterError(GridshiftError):
    """Raised when an energy meter cannot be read."""


class LeaseLost(GridshiftError):
    """Raised when a worker no longer holds the lease on the shard it is running."""
