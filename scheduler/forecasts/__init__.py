"""Forecast providers: per-site, per-slot carbon, price, renewable and water signals."""

from scheduler.forecasts.base import (
    ACTUAL,
    CARBON,
    FORECAST,
    PRICE,
    SIGNAL_COLUMNS,
    SIGNALS,
    SOLAR,
    WUE,
    FetchResult,
    Provider,
    ProviderError,
    Series,
    cache_key,
    resample,
)
from scheduler.forecasts.cache import (
    ForecastCache,
    ForecastVsActual,
    MemoryForecastCache,
    SqlForecastCache,
    forecast_vs_actual,
)
from scheduler.forecasts.csv import write_forecasts_csv
from scheduler.forecasts.http import HttpClient
from scheduler.forecasts.service import SignalSet, build_registry, collect_signals
from scheduler.forecasts.synthetic import synthetic_signals

__all__ = [
    "ACTUAL",
    "CARBON",
    "FORECAST",
    "PRICE",
    "SIGNALS",
    "SIGNAL_COLUMNS",
    "SOLAR",
    "WUE",
    "FetchResult",
    "ForecastCache",
    "ForecastVsActual",
    "HttpClient",
    "MemoryForecastCache",
    "Provider",
    "ProviderError",
    "Series",
    "SignalSet",
    "SqlForecastCache",
    "build_registry",
    "cache_key",
    "collect_signals",
    "forecast_vs_actual",
    "resample",
    "synthetic_signals",
    "write_forecasts_csv",
]
