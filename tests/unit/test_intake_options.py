"""Create options of a batch: completion windows, deadlines, sites, quality and metadata."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.domain import Fleet, ModelSpec, Pool, Profile, Site
from scheduler.errors import ConfigError, InvalidInput
from scheduler.intake.submit import (
    BatchOptions,
    check_deadline_reachable,
    check_options,
    parse_window,
    resolve_deadline,
)

CREATED = 1_800_000_000
FLEET = Fleet(
    slot_minutes=60,
    sites=(Site("site-a", 1.2, 0.5, 1.5, (Pool("cpu", "CPU", 1),)),),
    models=(ModelSpec("tiny-chat", 0.3, {"CPU": Profile(1, 500, 50, 30)}),),
)


@pytest.mark.parametrize(
    ("text", "hours"), [("24h", 24), ("6h", 6), ("72h", 72), ("3d", 72), (" 1h ", 1)]
)
def test_completion_windows_in_hours_or_days_are_accepted(text: str, hours: int) -> None:
    assert parse_window(text) == timedelta(hours=hours)


@pytest.mark.parametrize("text", ["", "0h", "24", "1w", "soon", "-3h", "1.5h"])
def test_other_completion_windows_are_refused_naming_the_parameter(text: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_window(text)
    assert e.value.errors[0].param == "completion_window"


def test_deadline_defaults_to_created_plus_window_and_accepts_unix_and_iso() -> None:
    start = datetime.fromtimestamp(CREATED, UTC)
    assert resolve_deadline(CREATED, "6h", None) == start + timedelta(hours=6)
    assert resolve_deadline(CREATED, "24h", CREATED + 100) == start + timedelta(seconds=100)
    assert resolve_deadline(CREATED, "24h", str(CREATED + 100)) == start + timedelta(seconds=100)
    iso = (start + timedelta(days=3)).isoformat().replace("+00:00", "Z")
    assert resolve_deadline(CREATED, "24h", iso) == start + timedelta(days=3)


@pytest.mark.parametrize("bad", [CREATED - 1, CREATED, "tomorrow", "2027-01-01T00:00:00", True])
def test_past_unreadable_or_naive_deadlines_are_refused(bad: object) -> None:
    with pytest.raises(InvalidInput) as e:
        resolve_deadline(CREATED, "24h", bad)  # type: ignore[arg-type]
    assert e.value.errors[0].param == "deadline"


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"endpoint": "/v1/moderations"}, "endpoint"),
        ({"endpoint": "/v1/images/generations"}, "endpoint"),
        ({"sites": ("mars",)}, "sites"),
        ({"sites": ()}, "sites"),
        ({"min_quality": 0.9}, "min_quality"),
        ({"priority": 0.0}, "priority"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
    ],
)
def test_bad_create_options_are_refused_naming_the_parameter(
    changes: dict[str, object], param: str
) -> None:
    options = BatchOptions(input_file_id="file-x", endpoint="/v1/chat/completions")
    with pytest.raises(InvalidInput) as e:
        check_options(replace(options, **changes), FLEET)  # type: ignore[arg-type]
    assert e.value.errors[0].param == param


def test_no_fleet_is_a_configuration_error_not_a_client_error() -> None:
    with pytest.raises(ConfigError, match="GRIDSHIFT_FLEET"):
        check_options(BatchOptions(input_file_id="file-x", endpoint="/v1/completions"), None)


def test_a_deadline_inside_the_current_slot_is_refused_with_the_earliest_one() -> None:
    # Given a batch created at 10:20 with hourly slots
    created = int(datetime(2026, 11, 22, 10, 20, tzinfo=UTC).timestamp())
    # When its deadline is 10:50 (before the slot in progress ends at 11:00)
    deadline = datetime(2026, 11, 22, 10, 50, tzinfo=UTC)
    with pytest.raises(InvalidInput) as e:
        check_deadline_reachable(created, deadline, 60)
    # Then it is refused naming the parameter and the earliest deadline it could meet
    assert e.value.errors[0].param == "deadline"
    assert "2026-11-22T11:00:00+00:00" in str(e.value)
    # and a deadline at the slot's end (the slot in progress may be used) is accepted
    check_deadline_reachable(created, datetime(2026, 11, 22, 11, 0, tzinfo=UTC), 60)
