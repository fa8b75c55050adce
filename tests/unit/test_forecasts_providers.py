"""Each forecast provider parses recorded answers served by a real local HTTP server."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from forecast_server import FIXTURES, FixtureServer

from scheduler.domain import Pool, Site
from scheduler.forecasts.base import (
    CARBON,
    FOSSIL_SHARE,
    MIX_KINDS,
    NUCLEAR_SHARE,
    PRICE,
    RENEWABLE_SHARE,
    SOLAR,
    ProviderError,
    resample,
)
from scheduler.forecasts.csv import CsvProvider
from scheduler.forecasts.electricitymaps import ElectricityMapsProvider
from scheduler.forecasts.http import HttpClient
from scheduler.forecasts.openmeteo import OpenMeteoSolarProvider, pv_power_kw
from scheduler.forecasts.uk import UkCarbonIntensityProvider, region_id
from scheduler.forecasts.watttime import WattTimeProvider, lbs_per_mwh_to_g_per_kwh

T0 = datetime(2026, 11, 22, tzinfo=UTC)
END = T0 + timedelta(hours=4)


def make_site(name: str = "gb-london") -> Site:
    return Site(
        name=name, pue=1.2, wue_l_per_kwh=0.3, ewif_l_per_kwh=1.0, pools=(Pool("p", "CPU", 1),)
    )


@pytest.fixture
def server() -> Iterator[FixtureServer]:
    with FixtureServer() as s:
        yield s


@pytest.fixture
def http() -> Iterator[HttpClient]:
    client = HttpClient(timeout_s=2.0, retries=2, backoff_s=0.01)
    yield client
    client.close()


def test_uk_national_forecast_and_actuals_are_read_half_hourly(server, http):
    # Given the national 48 h answer
    server.route("/intensity/", fixture="uk_national_fw48h.json")
    provider = UkCarbonIntensityProvider(http)
    # When fetched for the first two hours
    result = provider.fetch(
        make_site(), CARBON, {"base_url": server.base_url}, T0, T0 + timedelta(hours=2)
    )
    # Then forecasts are half-hourly in g/kWh, actuals only where the API had them
    assert result.forecast.step == timedelta(minutes=30)
    assert result.forecast.values[T0] == 180.0
    assert result.forecast.values[T0 + timedelta(minutes=210)] == 139.0
    assert result.actual is not None
    assert result.actual.values == {T0: 176.0, T0 + timedelta(minutes=30): 194.0}
    assert server.seen[0].path == "/intensity/2026-11-22T00:00Z/fw48h"


def test_uk_regional_forecast_by_region_name_asks_for_the_region_id(server, http):
    # Given the London regional answer
    server.route("/regional/", fixture="uk_regional_fw48h_london.json")
    provider = UkCarbonIntensityProvider(http)
    # When fetched with region "London"
    result = provider.fetch(
        make_site(),
        CARBON,
        {"base_url": server.base_url, "region": "London"},
        T0,
        T0 + timedelta(hours=2),
    )
    # Then the request names region 13 and the regional periods are read, without actuals
    assert server.seen[0].path == "/regional/intensity/2026-11-22T00:00Z/fw48h/regionid/13"
    assert sorted(result.forecast.values.values()) == [176.0, 188.0, 200.0, 210.0]
    assert result.actual is None


def test_uk_postcode_option_uses_the_postcode_endpoint(server, http):
    server.route("/regional/", fixture="uk_regional_fw48h_london.json")
    UkCarbonIntensityProvider(http).fetch(
        make_site(),
        CARBON,
        {"base_url": server.base_url, "postcode": "EC1A"},
        T0,
        T0 + timedelta(hours=2),
    )
    assert server.seen[0].path.endswith("/fw48h/postcode/EC1A")


def test_uk_unknown_region_is_refused_with_the_known_names():
    with pytest.raises(ProviderError, match="London"):
        region_id("Atlantis", "gb-x")


def test_uk_payload_of_the_wrong_shape_is_a_provider_error(server, http):
    server.route("/intensity/", body={"error": {"code": "400 Bad Request"}})
    with pytest.raises(ProviderError, match="no 'data'"):
        UkCarbonIntensityProvider(http).fetch(
            make_site(), CARBON, {"base_url": server.base_url}, T0, END
        )


def test_electricitymaps_sends_the_token_header_and_reads_hourly_points(server, http):
    # Given the recorded DE forecast
    server.route("/v3/carbon-intensity/forecast", fixture="electricitymaps_forecast_de.json")
    provider = ElectricityMapsProvider(http, token="secret-token")
    # When fetched for zone DE
    result = provider.fetch(
        make_site("de-frankfurt"), CARBON, {"zone": "DE", "base_url": server.base_url}, T0, END
    )
    # Then the token travels in auth-token and the points are hourly
    assert server.seen[0].headers.get("auth-token") == "secret-token"
    assert server.seen[0].query == {"zone": ["DE"], "emissionFactorType": ["direct"]}
    assert result.forecast.step == timedelta(hours=1)
    assert result.forecast.values[T0 + timedelta(hours=2)] == 371.0


def test_electricitymaps_without_a_token_says_which_setting_to_set(server, http):
    provider = ElectricityMapsProvider(http, token="")
    with pytest.raises(ProviderError, match="GRIDSHIFT_ELECTRICITYMAPS_TOKEN"):
        provider.fetch(
            make_site("de-frankfurt"), CARBON, {"zone": "DE", "base_url": server.base_url}, T0, END
        )
    assert server.seen == []


def test_watttime_logs_in_with_basic_auth_and_converts_lbs_per_mwh(server, http):
    # Given a login answer and a 5-minute MOER forecast in lbs/MWh
    server.route("/login", fixture="watttime_login.json")
    server.route("/v3/forecast", fixture="watttime_forecast_caiso_north.json")
    provider = WattTimeProvider(http, username="ann", password="pw")
    # When fetched
    result = provider.fetch(
        make_site("us-north"),
        CARBON,
        {"region": "CAISO_NORTH", "base_url": server.base_url},
        T0,
        END,
    )
    # Then login used basic auth, the forecast the bearer token, and values are g/kWh
    expected_auth = "Basic " + base64.b64encode(b"ann:pw").decode()
    assert server.seen[0].headers.get("Authorization") == expected_auth
    assert server.seen[1].headers.get("Authorization") == "Bearer recorded-test-token"
    assert server.seen[1].query["signal_type"] == ["co2_moer"]
    assert result.forecast.step == timedelta(minutes=5)
    assert result.forecast.values[T0] == pytest.approx(1000.0 * 0.45359237)
    # and an hourly slot averages the twelve 5-minute points
    hourly = resample(result.forecast, [T0], 60)
    assert hourly[T0] == pytest.approx(lbs_per_mwh_to_g_per_kwh(1055.0))


def test_watttime_refused_credentials_say_to_check_them(server, http):
    server.route("/login", body={"error": "bad"}, status=401)
    provider = WattTimeProvider(http, username="ann", password="wrong")
    with pytest.raises(ProviderError, match="credentials"):
        provider.fetch(
            make_site("us-north"),
            CARBON,
            {"region": "CAISO_NORTH", "base_url": server.base_url},
            T0,
            END,
        )


def test_watttime_without_credentials_names_the_settings(http):
    with pytest.raises(ProviderError, match="GRIDSHIFT_WATTTIME_USERNAME"):
        WattTimeProvider(http, username="", password="").fetch(
            make_site(), CARBON, {"region": "X"}, T0, END
        )


def test_openmeteo_turns_preceding_hour_irradiance_into_pv_kw(server, http):
    # Given an hourly shortwave forecast for Madrid (values are means of the preceding hour)
    server.route("/v1/forecast", fixture="openmeteo_forecast_madrid.json")
    provider = OpenMeteoSolarProvider(http)
    options = {"latitude": 40.4, "longitude": -3.7, "pv_kw_peak": 40, "base_url": server.base_url}
    # When fetched
    result = provider.fetch(make_site("es-madrid"), SOLAR, options, T0, T0 + timedelta(days=1))
    # Then 300 W/m2 stamped 12:00 is the 11:00-12:00 interval: 40 kW * 0.3 * 0.8 = 9.6 kW
    assert result.forecast.values[T0 + timedelta(hours=11)] == pytest.approx(9.6)
    assert result.forecast.values[T0 + timedelta(hours=2)] == 0.0
    assert server.seen[0].query["hourly"] == ["shortwave_radiation"]
    assert server.seen[0].query["latitude"] == ["40.4"]


def test_pv_power_is_proportional_to_irradiance_and_never_negative():
    assert pv_power_kw(500.0, 10.0, 0.8) == pytest.approx(4.0)
    assert pv_power_kw(1000.0, 10.0, 0.8) == pytest.approx(2 * pv_power_kw(500.0, 10.0, 0.8))
    assert pv_power_kw(-5.0, 10.0, 0.8) == 0.0


def test_openmeteo_without_pv_size_names_the_missing_option(http):
    with pytest.raises(ProviderError, match="pv_kw_peak"):
        OpenMeteoSolarProvider(http).fetch(
            make_site(), SOLAR, {"latitude": 1, "longitude": 2}, T0, END
        )


def test_csv_prices_are_filtered_by_site_and_scaled_per_kwh():
    # Given a prices file in EUR/MWh for two sites
    provider = CsvProvider(base_dir=FIXTURES)
    options = {"path": "prices_eur.csv", "column": "price_eur_per_mwh", "scale": 0.001}
    # When read for de-frankfurt
    result = provider.fetch(make_site("de-frankfurt"), PRICE, options, T0, END)
    # Then only that site's rows are read, converted to per kWh (negative prices kept)
    assert result.forecast.values[T0] == pytest.approx(0.12)
    assert result.forecast.values[T0 + timedelta(hours=2)] == pytest.approx(-0.02)
    assert len(result.forecast.values) == 4


def test_forecasts_csv_itself_is_a_source_for_every_signal(tmp_path: Path):
    # Given a contract forecasts.csv
    path = tmp_path / "forecasts.csv"
    path.write_text(
        "time,site,carbon_g_per_kwh,price_per_kwh,renewable_kw\n"
        "2026-11-22T00:00:00Z,gb-london,200,0.2,0\n"
        "2026-11-22T01:00:00Z,gb-london,150,0.1,3.5\n"
        "2026-11-22T00:00:00Z,other,999,9,9\n"
    )
    provider = CsvProvider()
    # When each signal is read with only a path
    carbon = provider.fetch(make_site(), CARBON, {"path": str(path)}, T0, END).forecast
    solar = provider.fetch(make_site(), SOLAR, {"path": str(path)}, T0, END).forecast
    # Then the contract columns are used
    assert carbon.values == {T0: 200.0, T0 + timedelta(hours=1): 150.0}
    assert solar.values[T0 + timedelta(hours=1)] == 3.5


def test_csv_missing_file_says_which_option_to_fix(tmp_path: Path):
    with pytest.raises(ProviderError, match="fix 'path'"):
        CsvProvider(base_dir=tmp_path).fetch(make_site(), PRICE, {"path": "nope.csv"}, T0, END)


def test_uk_national_generation_mix_is_read_per_half_hour_by_source(server, http):
    # Given the national /generation answer (percent per fuel)
    server.route("/generation/", fixture="uk_generation_national.json")
    provider = UkCarbonIntensityProvider(http)
    end = T0 + timedelta(hours=1)
    opts = {"base_url": server.base_url}
    # When each share is fetched
    got = {k: provider.fetch(make_site(), k, opts, T0, end) for k in MIX_KINDS}
    # Then fossil = coal + gas (+ oil), renewable = wind + solar + hydro + biomass, nuclear as
    # given; imports and other stay unclassified; the measured mix is returned as actuals too
    assert got[FOSSIL_SHARE].forecast.values[T0] == pytest.approx(28.3)
    assert got[NUCLEAR_SHARE].forecast.values[T0] == pytest.approx(15.2)
    assert got[RENEWABLE_SHARE].forecast.values[T0] == pytest.approx(6.1 + 1.8 + 36.8)
    later = T0 + timedelta(minutes=30)
    assert got[FOSSIL_SHARE].actual is not None
    assert got[FOSSIL_SHARE].actual.values[later] == pytest.approx(30.1)
    assert server.seen[0].path == "/generation/2026-11-22T00:00Z/2026-11-22T01:00Z"


def test_uk_regional_generation_mix_comes_from_the_regional_forecast_periods(server, http):
    server.route("/regional/", fixture="uk_regional_fw48h_london.json")
    opts = {"base_url": server.base_url, "region": "London"}
    got = UkCarbonIntensityProvider(http).fetch(make_site(), FOSSIL_SHARE, opts, T0, END)
    assert got.forecast.values[T0] == pytest.approx(41.2)
    assert got.actual is None  # regional answers are forecasts
    nuclear = UkCarbonIntensityProvider(http).fetch(make_site(), NUCLEAR_SHARE, opts, T0, END)
    assert nuclear.forecast.values[T0] == pytest.approx(14.1)


def test_electricitymaps_power_breakdown_gives_fossil_nuclear_and_renewable_shares(server, http):
    # Given the recorded /v3/power-breakdown/history answer for DE
    server.route(
        "/v3/power-breakdown/history",
        fixture="electricitymaps_power_breakdown_history_de.json",
    )
    provider = ElectricityMapsProvider(http, token="secret-token")
    opts = {"zone": "DE", "base_url": server.base_url}
    site = make_site("de-frankfurt")
    got = {k: provider.fetch(site, k, opts, T0, END).forecast.values for k in MIX_KINDS}
    one = T0 + timedelta(hours=1)
    # Then fossil = 100 - fossil-free, renewable as reported, nuclear its consumption share
    assert got[FOSSIL_SHARE][T0] == pytest.approx(42.0)
    assert got[RENEWABLE_SHARE][one] == pytest.approx(51.0)
    assert got[NUCLEAR_SHARE][T0] == pytest.approx(0.0)
    assert got[NUCLEAR_SHARE][one] == pytest.approx(100.0 * 2400 / 48000)
    assert server.seen[0].query == {"zone": ["DE"]}
    assert server.seen[0].headers.get("auth-token") == "secret-token"


def test_a_generation_mix_of_the_wrong_shape_is_a_provider_error(server, http):
    server.route("/v3/power-breakdown/history", body={"zone": "DE"})
    provider = ElectricityMapsProvider(http, token="t")
    with pytest.raises(ProviderError, match="history"):
        provider.fetch(
            make_site(), FOSSIL_SHARE, {"zone": "DE", "base_url": server.base_url}, T0, END
        )
