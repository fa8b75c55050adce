"""Carbon budget: states from the budget left, model tiers each state allows, and the pacer.

Budget states (share of the period's budget still unspent):

    NORMAL      left >  50 %   every model meeting the quality floor
    TIGHTENING  left >  25 %   not the largest qualifying tier (unless it is the only one)
    RESTRICTED  left >  10 %   only the smallest qualifying tier (lowest quality >= floor)
    CRITICAL    otherwise      only the smallest qualifying model, and work that can wait
                               (deadline after the current horizon) is deferred

A *tier* is a distinct quality value; a batch that names its model is never changed (the
restrictions apply to ``min_quality``/``"auto"`` batches only).

The monthly pacer is an online primal-dual (projected subgradient) update of a carbon price
``lambda`` in currency per gram, applied once per day after the day's emissions are known:

    target_d        = (B - S_d) / (D - d)                     remaining budget / remaining days
    lambda_{d+1}    = max(0, lambda_d + eta * (spent_d - target_d) / target_d)

where ``B`` is the month's budget, ``S_d`` what was spent before day ``d`` (0-based), ``D`` the
days in the month and ``eta`` the step in currency per gram per unit of relative overspend. The
planner adds ``lambda * co2_g`` to what it minimises, so a day that overspends its share makes
carbon dearer tomorrow and a day that underspends makes it cheaper, down to zero. The target
re-spreads what is left over the days left, so early errors are corrected by later days and the
month lands near ``B``. When the budget is spent (target <= 0) the price jumps by ``eta * 10``
per day: the state is CRITICAL by then anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from scheduler.domain import BudgetState, ModelSpec, PlanningBatch

NORMAL_ABOVE = 0.50
TIGHTENING_ABOVE = 0.25
RESTRICTED_ABOVE = 0.10
DEFAULT_ETA_PER_G = 1e-4  # currency per g per 100 % relative overspend (~100 USD per tonne)
_EXHAUSTED_STEP = 10.0


def budget_state(left_g: float, budget_g: float) -> BudgetState:
    """State of a carbon budget from what is left of it.

    Args:
        left_g: grams of CO2 still unspent in the period (may be negative when overspent).
        budget_g: the period's whole budget in grams.

    Returns:
        NORMAL above 50 % left, TIGHTENING above 25 %, RESTRICTED above 10 %, else CRITICAL.

    Raises:
        ValueError: ``budget_g`` is not positive.
    """
    if budget_g <= 0:
        raise ValueError(f"a carbon budget must be > 0 g, got {budget_g}")
    share = left_g / budget_g
    if share > NORMAL_ABOVE:
        return BudgetState.NORMAL
    if share > TIGHTENING_ABOVE:
        return BudgetState.TIGHTENING
    if share > RESTRICTED_ABOVE:
        return BudgetState.RESTRICTED
    return BudgetState.CRITICAL


def allowed_models_for(
    state: BudgetState, models: Sequence[ModelSpec], min_quality: float
) -> tuple[str, ...]:
    """Names of the models an ``"auto"``/``min_quality`` batch may use in a budget state.

    Args:
        state: the budget state.
        models: the fleet's models.
        min_quality: the batch's quality floor.

    Returns:
        Qualifying model names (quality >= floor), ascending quality then file order, cut by
        the state (see the module docstring). Empty only if no model meets the floor.
    """
    qualifying = sorted(
        (m for m in models if m.quality >= min_quality - 1e-12 and not m.embeds),
        key=lambda m: m.quality,
    )
    if not qualifying:
        return ()
    tiers = sorted({m.quality for m in qualifying})
    if state is BudgetState.NORMAL:
        keep = qualifying
    elif state is BudgetState.TIGHTENING:
        keep = [m for m in qualifying if len(tiers) == 1 or m.quality < tiers[-1]]
    elif state is BudgetState.RESTRICTED:
        keep = [m for m in qualifying if m.quality == tiers[0]]
    else:
        keep = qualifying[:1]
    return tuple(m.name for m in keep)


def restrict_batch(
    batch: PlanningBatch, state: BudgetState, models: Sequence[ModelSpec]
) -> PlanningBatch:
    """Pin a ``min_quality`` batch to its one allowed model when the state leaves only one.

    A batch that names its model, or one still allowed several models, is returned unchanged
    (the planner's own carbon stage already prefers smaller models; use
    ``allowed_models_for`` to exclude tiers in a model that supports it).
    """
    if batch.min_quality is None:
        return batch
    wide = [m for m in models if m.holds(batch.max_request_tokens)]  # never pin to a short one
    allowed = allowed_models_for(state, wide, batch.min_quality)
    if len(allowed) != 1:
        return batch
    return replace(batch, model=allowed[0], min_quality=None)


def should_defer(batch: PlanningBatch, state: BudgetState, horizon_end: datetime) -> bool:
    """Whether to hold ``batch`` back from this plan: CRITICAL and its deadline is later."""
    return state is BudgetState.CRITICAL and batch.deadline > horizon_end


@dataclass(frozen=True, slots=True)
class PacerState:
    """The monthly pacer between two days.

    Attributes:
        month_budget_g: the month's budget ``B`` in grams.
        days_in_month: ``D``.
        day: days already closed (0 at the start of the month).
        spent_g: grams spent on the closed days (``S_d``).
        price_per_g: the carbon price ``lambda`` to plan the next day with (currency per g).
    """

    month_budget_g: float
    days_in_month: int
    day: int = 0
    spent_g: float = 0.0
    price_per_g: float = 0.0

    @property
    def left_g(self) -> float:
        """Grams of the month's budget not spent yet."""
        return self.month_budget_g - self.spent_g

    @property
    def state(self) -> BudgetState:
        """Budget state of the month from what is left."""
        return budget_state(self.left_g, self.month_budget_g)


def start_month(month_budget_g: float, days_in_month: int, price_per_g: float = 0.0) -> PacerState:
    """A pacer at the start of a month (optionally carrying last month's price).

    Raises:
        ValueError: a non-positive budget or day count.
    """
    if month_budget_g <= 0 or days_in_month <= 0:
        raise ValueError("a month needs a budget > 0 g and at least one day")
    return PacerState(month_budget_g, days_in_month, price_per_g=max(0.0, price_per_g))


def daily_target_g(state: PacerState) -> float:
    """Today's share of the budget: what is left spread over the days left (g)."""
    days_left = max(1, state.days_in_month - state.day)
    return state.left_g / days_left


def close_day(
    state: PacerState, spent_g: float, *, eta_per_g: float = DEFAULT_ETA_PER_G
) -> PacerState:
    """Book one day's emissions and update the carbon price (projected subgradient step).

    ``lambda' = max(0, lambda + eta * (spent - target) / target)`` with ``target =
    daily_target_g(state)``; if nothing is left (target <= 0) the price rises by ``10 * eta``.

    Args:
        state: the pacer before the day closes.
        spent_g: grams emitted by the day's work.
        eta_per_g: step size in currency per gram per unit of relative overspend.

    Raises:
        ValueError: negative ``spent_g`` or ``eta_per_g``.
    """
    if spent_g < 0 or eta_per_g < 0:
        raise ValueError("spent_g and eta_per_g must be >= 0")
    target = daily_target_g(state)
    # Relative overspend keeps eta independent of the budget's size; a spent budget escalates.
    step = eta_per_g * (spent_g - target) / target if target > 0 else _EXHAUSTED_STEP * eta_per_g
    return replace(
        state,
        day=state.day + 1,
        spent_g=state.spent_g + spent_g,
        price_per_g=max(0.0, state.price_per_g + step),
    )
