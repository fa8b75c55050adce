"""Candidate placements of each batch, and grouping of interchangeable batches into LP groups."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from scheduler.domain import ModelSpec, PlanningBatch, Unplaced
from scheduler.optimizer.problem import PlanningProblem


@dataclass(frozen=True, slots=True)
class Option:
    """A (site, pool, model) combination a batch may use; indices into the fleet's tuples."""

    site: int
    pool: int  # index of the pool within its site
    model: int


@dataclass(frozen=True, slots=True)
class Candidate:
    """A batch that has at least one feasible (site, pool, model) and a non-empty slot window."""

    batch: PlanningBatch
    options: tuple[Option, ...]
    slot_lo: int  # first allowed slot index
    slot_hi: int  # one past the last allowed slot index


@dataclass(frozen=True, slots=True)
class BatchGroup:
    """Batches the LP treats as one: same window, same options; each member gets the same shares.

    Attributes:
        members: the batches, in input order.
        options: feasible (site, pool, model) combinations shared by every member.
        slot_lo: first allowed slot index; slot_hi: one past the last.
        input_tokens: sum over members; output_tokens likewise.
        priority_sum: sum of member priorities (delay weight per hour of slot end).
        delay_offset_h: sum of ``priority * (submitted_at - slots[0])`` in hours.
    """

    members: tuple[PlanningBatch, ...]
    options: tuple[Option, ...]
    slot_lo: int
    slot_hi: int
    input_tokens: float
    output_tokens: float
    priority_sum: float
    delay_offset_h: float

    @property
    def tokens(self) -> float:
        """Input plus output tokens of every member."""
        return self.input_tokens + self.output_tokens


def allowed_models(problem: PlanningProblem, batch: PlanningBatch) -> list[int]:
    """Indices of models that may serve ``batch`` (named model, or quality window).

    A ``min_quality`` batch may use models with ``min_quality <= quality <= max_quality`` where
    the ceiling comes from ``problem.max_quality_by_batch`` or ``problem.max_quality`` (carbon
    budget tiers). When the ceiling excludes every qualifying model the smallest qualifying model
    is kept: a budget tier narrows the choice, it never makes work impossible. A model whose
    ``context_tokens`` cannot hold the batch's largest request (``max_request_tokens``) is never
    allowed, named or not.
    """
    models = problem.fleet.models
    need = batch.max_request_tokens
    if batch.model is not None:
        return [i for i, m in enumerate(models) if m.name == batch.model and m.holds(need)]
    floor = batch.min_quality if batch.min_quality is not None else float("-inf")
    ok = [
        i
        for i, m in enumerate(models)
        if m.quality >= floor - 1e-12 and not m.embeds and m.holds(need)
    ]
    ceiling = problem.max_quality_by_batch.get(batch.id, problem.max_quality)
    if ceiling is None or not ok:
        return ok
    capped = [i for i in ok if models[i].quality <= ceiling + 1e-12]
    return capped or [min(ok, key=lambda i: models[i].quality)]


def _fits(model: ModelSpec, gpu: str, count: int) -> bool:
    profile = model.profiles.get(gpu)
    return profile is not None and count >= profile.gpus


def slot_window(problem: PlanningProblem, batch: PlanningBatch) -> tuple[int, int]:
    """Slot index range ``[lo, hi)`` the batch may use (contract window rule).

    A slot listed in ``problem.slot_available`` (the slot in progress) may start before
    ``submitted_at`` as long as it ends after it; every other slot must start at or after it.
    """
    slots = problem.slots
    delta: timedelta = problem.slot_delta
    lo = bisect.bisect_left(slots, batch.submitted_at)
    prev = slots[lo - 1] if lo > 0 else None
    if prev is not None and prev in problem.slot_available and prev + delta > batch.submitted_at:
        lo -= 1
    hi = bisect.bisect_right(slots, batch.deadline - delta)
    return lo, max(lo, hi)


def candidates(problem: PlanningProblem) -> tuple[list[Candidate], list[Unplaced]]:
    """Split the batches into those with feasible placements and those with none (and why).

    Returns:
        The candidates in input order, and the batches no placement can serve, each with a
        reason a user can act on (no slot in the window, no known site, no model, no GPU fit).
    """
    fleet = problem.fleet
    site_index = {s.name: i for i, s in enumerate(fleet.sites)}
    out: list[Candidate] = []
    bad: list[Unplaced] = []
    for b in problem.batches:
        lo, hi = slot_window(problem, b)
        if hi <= lo:
            bad.append(Unplaced(b.id, _window_reason(problem, b)))
            continue
        if b.sites is None:
            sites = list(range(len(fleet.sites)))
        else:
            sites = sorted({site_index[s] for s in b.sites if s in site_index})
        if not sites:
            names = ", ".join(b.sites or ())
            bad.append(
                Unplaced(
                    b.id,
                    f"none of its sites ({names}) is in the fleet; allow one of "
                    f"{', '.join(site_index)}",
                )
            )
            continue
        models = allowed_models(problem, b)
        if not models:
            bad.append(Unplaced(b.id, _model_reason(problem, b)))
            continue
        options = tuple(
            Option(s, p, m)
            for s in sites
            for p, pool in enumerate(fleet.sites[s].pools)
            for m in models
            if _fits(fleet.models[m], pool.gpu, pool.count)
        )
        if not options:
            names = ", ".join(fleet.models[m].name for m in models)
            bad.append(
                Unplaced(
                    b.id,
                    f"no GPU pool at its allowed sites can run {names} (no profile for the "
                    "pool's GPU or too few GPUs); allow more sites or another model",
                )
            )
            continue
        out.append(Candidate(b, options, lo, hi))
    return out, bad


def _window_reason(problem: PlanningProblem, b: PlanningBatch) -> str:
    start = problem.slots[0]
    end = problem.horizon_end
    if b.deadline <= start or b.submitted_at >= end:
        return (
            f"its window {_t(b.submitted_at)} .. {_t(b.deadline)} lies outside the planning "
            f"horizon {_t(start)} .. {_t(end)}; extend the forecasts or fix the dates"
        )
    return (
        f"no whole {problem.fleet.slot_minutes}-minute slot fits between its submission "
        f"{_t(b.submitted_at)} and its deadline {_t(b.deadline)}; move the deadline later"
    )


def _model_reason(problem: PlanningProblem, b: PlanningBatch) -> str:
    names = ", ".join(problem.fleet.model_names)
    need = b.max_request_tokens
    if b.model is not None:
        named = [m for m in problem.fleet.models if m.name == b.model]
        if named and not named[0].holds(need):
            return (
                f"its largest request needs at least {need} tokens of context but model "
                f"{b.model!r} has {named[0].context_tokens}; send it to a model with a larger "
                "context_tokens or lower its max_tokens"
            )
        return f"unknown model {b.model!r}; the fleet serves {names}"
    floor = b.min_quality if b.min_quality is not None else float("-inf")
    if any(m.quality >= floor - 1e-12 and not m.embeds for m in problem.fleet.models):
        return (
            f"its largest request needs at least {need} tokens of context and no model with "
            f"quality >= {b.min_quality} has that much context_tokens; lower its max_tokens or "
            "add a model with a larger context"
        )
    best = max(m.quality for m in problem.fleet.models)
    return (
        f"min_quality {b.min_quality} is above every model's quality (best {best}); "
        "lower min_quality or add a better model"
    )


def _t(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%MZ")


def group_candidates(
    problem: PlanningProblem, cands: Sequence[Candidate], *, aggregate: bool
) -> list[BatchGroup]:
    """Group interchangeable candidates (same slot window and the same options).

    With ``aggregate=False`` every batch is its own group and the LP is the exact relaxation.
    With aggregation the members of a group share their placement proportionally, which is
    exact for carbon, cost and water when members have the same input/output mix, and exact for
    delay when their ``priority / tokens`` ratios agree; otherwise it is a restriction (never
    infeasible, possibly slightly worse; see docs/optimizer.md for the measured gap).
    """
    epoch = problem.slots[0]
    buckets: dict[object, list[Candidate]] = {}
    for c in cands:
        key: object = (c.slot_lo, c.slot_hi, c.options) if aggregate else c.batch.id
        buckets.setdefault(key, []).append(c)
    groups = []
    for members in buckets.values():
        first = members[0]
        groups.append(
            BatchGroup(
                members=tuple(c.batch for c in members),
                options=first.options,
                slot_lo=first.slot_lo,
                slot_hi=first.slot_hi,
                input_tokens=sum(c.batch.input_tokens for c in members),
                output_tokens=sum(c.batch.output_tokens for c in members),
                priority_sum=sum(c.batch.priority for c in members),
                delay_offset_h=sum(
                    c.batch.priority * (c.batch.submitted_at - epoch).total_seconds() / 3600.0
                    for c in members
                ),
            )
        )
    return groups
