"""The clock seam: in-process pinning, the ``GRIDSHIFT_CLOCK`` setting, the old store names."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from scheduler import clock
from scheduler.store import batches, tables

AT = datetime(2026, 3, 2, 22, 59, 45, tzinfo=UTC)


def test_use_clock_pins_the_seam_and_the_old_store_names() -> None:
    with clock.use_clock(clock.frozen(AT)):
        assert clock.now_utc() == AT
        assert tables.now_utc() == AT
        assert batches.now_s() == clock.now_s() == int(AT.timestamp())
        with tables.replay_clock(clock.frozen(AT + timedelta(hours=1))):
            assert clock.now_utc() == AT + timedelta(hours=1)
        assert clock.now_utc() == AT
    assert abs(clock.now_utc() - datetime.now(UTC)) < timedelta(seconds=5)


def test_pinned_clock_ticks_in_real_time() -> None:
    tick = clock.pinned(AT)
    first = tick()
    assert AT <= first < AT + timedelta(seconds=1)
    assert tick() >= first


def test_setting_anchored_at_a_real_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    real = datetime.now(UTC).timestamp() - 10.0  # the fake instant was 10 s ago in real time
    monkeypatch.setenv(clock.SETTING, clock.clock_setting(AT, real))
    assert AT + timedelta(seconds=10) <= clock.now_utc() < AT + timedelta(seconds=12)
    with clock.use_clock(clock.frozen(AT)):  # an in-process override wins over the setting
        assert clock.now_utc() == AT


def test_setting_without_anchor_starts_at_first_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(clock.SETTING, "2026-03-02T23:57:30+00:00")
    start = datetime(2026, 3, 2, 23, 57, 30, tzinfo=UTC)
    assert start <= clock.now_utc() < start + timedelta(seconds=2)


@pytest.mark.parametrize("value", ["abc", "2026-03-02T22:59:45", "2026-03-02T22:59:45Z@soon"])
def test_bad_setting_says_what_is_expected(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(clock.SETTING, value)
    with pytest.raises(clock.ClockSettingError, match=r"<ISO-8601 instant>\[@<Unix seconds>\]"):
        clock.now_utc()


@pytest.mark.slow  # starts a process
def test_spawned_process_agrees_with_the_anchor() -> None:
    setting = clock.clock_setting(AT)
    code = "from scheduler.clock import now_utc; print(now_utc().isoformat())"
    env = {**os.environ, clock.SETTING: setting}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    child = datetime.fromisoformat(out.strip())
    assert AT <= child < AT + timedelta(seconds=30)
