"""The explanation's "limited by" never contradicts its own figures (issue 21).

The case seen on a live service: an embeddings batch placed at 215 g/kWh was "limited by
deadline" while an allowed site was at 151 g/kWh in the same hour and 109 later inside its
window. A deadline (or residency) is the limit only for work already in its cleanest allowed
slot; when a cleaner allowed option inside the window was passed over, that option's reason is
the answer.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scheduler.review.explain import Option, _Limit, _limit

T = datetime(2026, 3, 2, 20, tzinfo=UTC)


def _opt(site: str, hour: int, g: float) -> Option:
    return Option(site=site, slot_start=T.replace(hour=hour), carbon_g_per_kwh=g, co2_g=g)


def _case(*, moved: bool, next_best: Option | None = None, **kw: object) -> _Limit:
    return _Limit(
        placed=True,
        allowed=("es-madrid", "de-frankfurt"),
        moved=moved,
        worst_got=215.0,
        outside=kw.get("outside"),  # type: ignore[arg-type]
        later=kw.get("later"),  # type: ignore[arg-type]
        next_best=next_best,
        from_duals=kw.get("from_duals"),  # type: ignore[arg-type]
        notes=str(kw.get("notes", "")),
    )


@pytest.mark.parametrize("full", [True, False])
def test_a_cleaner_allowed_option_in_the_window_is_never_called_a_deadline(full: bool) -> None:
    # Given a batch at 215 g/kWh while Madrid was 109 g/kWh inside its window, and an even
    # cleaner hour after its deadline
    madrid = _opt("es-madrid", 23, 109.0)
    case = _case(moved=True, next_best=madrid, later=_opt("es-madrid", 5, 90.0))

    # When the limit is decided
    decided = _limit(case, lambda o: full and o == madrid)

    # Then it is the capacity of that cleaner slot, or the tolerance: never the deadline
    assert decided is not None
    assert decided[0] == ("capacity" if full else "tolerance")
    assert "deadline" not in decided[1]


def test_deadline_is_the_limit_for_work_in_its_cleanest_allowed_slot() -> None:
    # Given work in its cleanest allowed slot and a cleaner allowed hour after its deadline
    case = _case(moved=False, later=_opt("es-madrid", 5, 90.0))
    # Then the deadline is the limit, with the later option's figure
    assert _limit(case, lambda o: False) == (
        "deadline",
        "a cleaner hour came after its deadline: es-madrid Mon 05:00 UTC at 90 g/kWh",
    )


def test_residency_names_the_allowed_sites_only_when_nothing_allowed_was_cleaner() -> None:
    london = _opt("gb-london", 21, 60.0)
    # Given a cleaner site it may not use, and no cleaner allowed option in the window
    unmoved = _limit(_case(moved=False, outside=london), lambda o: False)
    assert unmoved is not None and unmoved[0] == "residency"
    assert unmoved[1].startswith("its data may only go to es-madrid, de-frankfurt; gb-london")
    # When a cleaner allowed option was passed over, residency is not the answer
    moved = _limit(
        _case(moved=True, outside=london, next_best=_opt("es-madrid", 21, 151.0)), lambda o: True
    )
    assert moved is not None and moved[0] == "capacity"


def test_duals_notes_and_nothing() -> None:
    dual = ("capacity", "the capacity of es-madrid/p at Mon 23:00 UTC was full")
    assert _limit(_case(moved=True, from_duals=dual), lambda o: False) == dual
    water = _limit(_case(moved=True, notes="water cap binds at es-madrid"), lambda o: False)
    assert water is not None and water[0] == "water cap"
    # nothing cleaner anywhere: not limited
    assert _limit(_case(moved=False), lambda o: False) is None
    # and an unplaced batch says so first
    unplaced = _Limit(
        placed=False,
        allowed=("es-madrid",),
        moved=False,
        worst_got=None,
        outside=None,
        later=None,
        next_best=None,
        from_duals=None,
        notes="",
    )
    assert _limit(unplaced, lambda o: False) == ("unplaced", "no plan placed it (yet)")
