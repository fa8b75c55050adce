"""HTTP retries and timeouts against a real local server; resampling onto slots."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from forecast_server import FixtureServer

from scheduler.forecasts.base import ProviderError, Series, cache_key, infer_step, resample
from scheduler.forecasts.http import HttpClient

T0 = datetime(2026, 11, 22, tzinfo=UTC)


@pytest.fixture
def server() -> Iterator[FixtureServer]:
    with FixtureServer() as s:
        yield s


def test_a_503_is_retried_and_the_next_answer_used(server):
    # Given a route that fails twice with 503 before answering
    route = server.route("/x", body={"ok": 1}, fail_first=2)
    client = HttpClient(timeout_s=2.0, retries=3, backoff_s=0.01)
    # When fetched once
    payload = client.get_json(server.base_url + "/x")
    # Then the third attempt's body comes back
    assert payload == {"ok": 1}
    assert route.hits == 3


def test_a_429_is_retried_too(server):
    route = server.route("/x", body={"ok": 2}, fail_first=1, fail_status=429)
    assert HttpClient(timeout_s=2.0, retries=2, backoff_s=0.01).get_json(
        server.base_url + "/x"
    ) == {"ok": 2}
    assert route.hits == 2


def test_retries_exhausted_on_5xx_raise_a_provider_error_naming_the_status(server):
    server.route("/x", body={}, fail_first=10, fail_status=502)
    with pytest.raises(ProviderError, match="502"):
        HttpClient(timeout_s=2.0, retries=1, backoff_s=0.01).get_json(server.base_url + "/x")


def test_a_stalled_server_costs_at_most_the_timeouts(server):
    # Given a server that answers after 2 s, and a 0.2 s timeout with one retry
    server.route("/slow", body={}, delay_s=2.0)
    client = HttpClient(timeout_s=0.2, retries=1, backoff_s=0.01)
    # When fetched
    began = time.monotonic()
    with pytest.raises(ProviderError):
        client.get_json(server.base_url + "/slow")
    # Then it gives up after about two timeouts, not after the server's delay
    assert time.monotonic() - began < 1.5


def test_a_client_error_is_not_retried(server):
    route = server.route("/x", body={"error": "bad zone"}, status=400)
    with pytest.raises(ProviderError, match="400"):
        HttpClient(timeout_s=2.0, retries=3, backoff_s=0.01).get_json(server.base_url + "/x")
    assert route.hits == 1


def test_half_hourly_values_are_averaged_into_hourly_slots():
    # Given half-hourly values 100, 200, 300, 500
    series = Series(
        {T0 + timedelta(minutes=30 * i): v for i, v in enumerate([100, 200, 300, 500])},
        timedelta(minutes=30),
    )
    # When resampled to 60-minute slots
    out = resample(series, [T0, T0 + timedelta(hours=1)], 60)
    # Then each slot is the mean of its two halves
    assert out == {T0: 150.0, T0 + timedelta(hours=1): 400.0}


def test_hourly_values_are_held_across_quarter_hour_slots():
    series = Series({T0: 10.0, T0 + timedelta(hours=1): 20.0}, timedelta(hours=1))
    slots = [T0 + timedelta(minutes=15 * i) for i in range(8)]
    out = resample(series, slots, 15)
    assert [out[t] for t in slots] == [10.0] * 4 + [20.0] * 4


def test_slots_mostly_outside_the_series_are_left_for_the_fallback():
    series = Series({T0: 1.0, T0 + timedelta(minutes=30): 3.0}, timedelta(minutes=30))
    out = resample(series, [T0, T0 + timedelta(hours=1)], 60)
    assert out == {T0: 2.0}


def test_a_slot_half_covered_uses_the_mean_of_what_is_covered():
    series = Series({T0 + timedelta(minutes=30): 7.0}, timedelta(minutes=30))
    assert resample(series, [T0], 60) == {T0: 7.0}


def test_infer_step_is_the_smallest_gap():
    times = [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=1, minutes=15)]
    assert infer_step(times) == timedelta(minutes=15)
    assert infer_step([T0]) == timedelta(hours=1)


def test_cache_keys_ignore_transport_options_but_not_what_is_measured():
    a = cache_key("gb-london", {"region": "London", "base_url": "http://127.0.0.1:1"})
    b = cache_key("gb-london", {"region": "London", "fallback": "synthetic"})
    c = cache_key("gb-london", {"region": "Wales"})
    assert a == b
    assert a != c
