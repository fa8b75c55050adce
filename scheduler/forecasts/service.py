"""Collecting per-(site, slot) signals from providers, with caching and labelled fallbacks."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from scheduler.config import Settings
from scheduler.domain import CarbonFactor, Fleet, SignalSource, Site, SlotSignal
from scheduler.errors import ForecastUnavailable
from scheduler.forecasts.base import (
    ACTUAL,
    CARBON,
    FORECAST,
    MIX,
    MIX_KINDS,
    PRICE,
    SIGNAL_ALIASES,
    SOLAR,
    WUE,
    Provider,
    ProviderError,
    Series,
    cache_key,
    carbon_factor_of,
    infer_step,
    resample,
    utc,
)
from scheduler.forecasts.cache import ForecastCache, MemoryForecastCache
from scheduler.forecasts.csv import CsvProvider
from scheduler.forecasts.electricitymaps import ElectricityMapsProvider
from scheduler.forecasts.http import HttpClient
from scheduler.forecasts.issues import slot_issue_times
from scheduler.forecasts.openmeteo import OpenMeteoSolarProvider
from scheduler.forecasts.provenance import carbon_provenance
from scheduler.forecasts.synthetic import DEFAULT_SEED, ConstantProvider, SyntheticProvider
from scheduler.forecasts.uk import UkCarbonIntensityProvider
from scheduler.forecasts.watttime import WattTimeProvider

log = logging.getLogger(__name__)

PERSISTENCE_DAYS = 14
"""How far back persistence looks for the same time of day."""

ALIASES = {
    "carbonintensity": "uk-carbon-intensity",
    "uk": "uk-carbon-intensity",
    "electricity-maps": "electricitymaps",
    "openmeteo": "open-meteo",
}


@dataclass(frozen=True, slots=True)
class SignalSet:
    """Signals for every (site, slot) of a horizon, with where each came from.

    Attributes:
        signals: ``signals[(site, slot)]``, ready for ``PlanningProblem.signals``.
        fallback: True when any value came from a fallback (stale cache, persistence or a
            fallback provider): the plan must say it used one.
        notes: one line per (site, signal) that needed a fallback, saying why.
        sources: ``(site, signal kind) -> provider`` that answered first-hand (or ``none``).
    """

    signals: Mapping[tuple[str, datetime], SlotSignal]
    fallback: bool = False
    notes: tuple[str, ...] = ()
    sources: Mapping[tuple[str, str], str] = field(default_factory=dict)


def build_registry(
    settings: Settings,
    *,
    base_dir: Path | None = None,
    http: HttpClient | None = None,
    retries: int = 3,
    backoff_s: float = 0.5,
    seed: int = DEFAULT_SEED,
) -> dict[str, Provider]:
    """Every known provider by its ``fleet.yaml`` name (and aliases).

    Args:
        settings: read for ``http_timeout_s`` and the Electricity Maps / WattTime credentials.
        base_dir: where relative CSV paths start (default: the fleet file's folder, if set).
        http: a shared HTTP client (default: one with ``settings.http_timeout_s``).
        retries: HTTP retries on 429/5xx and connection errors.
        backoff_s: urllib3 backoff factor in seconds.
        seed: seed of the synthetic provider.
    """
    client = http or HttpClient(
        timeout_s=settings.http_timeout_s, retries=retries, backoff_s=backoff_s
    )
    if base_dir is None and settings.fleet is not None:
        base_dir = Path(settings.fleet).parent
    providers: list[Provider] = [
        UkCarbonIntensityProvider(client),
        ElectricityMapsProvider(client, token=settings.electricitymaps_token),
        WattTimeProvider(
            client, username=settings.watttime_username, password=settings.watttime_password
        ),
        OpenMeteoSolarProvider(client),
        CsvProvider(base_dir=base_dir),
        SyntheticProvider(seed=seed),
        ConstantProvider(),
    ]
    registry = {p.name: p for p in providers}
    registry.update({alias: registry[name] for alias, name in ALIASES.items()})
    return registry


def site_source(site: Site, kind: str) -> SignalSource | None:
    """The site's configured source of ``kind`` (``solar`` also under ``renewable``...)."""
    for name, source in site.signals.items():
        if SIGNAL_ALIASES.get(name, name) == kind:
            return source
    return None


def carbon_factor_of_site(fleet: Fleet, site_name: str) -> str:
    """The factor type of a site's configured carbon source (average direct without one)."""
    source = site_source(fleet.site(site_name), CARBON)
    if source is None:
        return CarbonFactor.AVERAGE_DIRECT.value
    return carbon_factor_of(ALIASES.get(source.provider, source.provider), source.options)


def fallback_source(source: SignalSource) -> SignalSource | None:
    raw = source.options.get("fallback")
    if not raw:
        return None
    if isinstance(raw, str):
        return SignalSource(provider=raw)
    if isinstance(raw, Mapping) and raw.get("provider"):
        return SignalSource(str(raw["provider"]), {k: v for k, v in raw.items() if k != "provider"})
    return None


@dataclass
class _Filled:
    values: dict[datetime, float] = field(default_factory=dict)
    labels: dict[datetime, str] = field(default_factory=dict)
    fallback: set[datetime] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    first_hand: str = "none"
    issued: dict[datetime, datetime] = field(default_factory=dict)  # slot -> issue used
    error: str | None = None  # why the configured provider gave nothing first-hand


class _Collector:
    def __init__(
        self,
        registry: Mapping[str, Provider],
        cache: ForecastCache,
        now: datetime,
        slots: Sequence[datetime],
        slot_minutes: int,
        reuse_within: timedelta | None = None,
    ) -> None:
        self.reuse_within = reuse_within
        self.registry = registry
        self.cache = cache
        self.now = utc(now)
        self.slots = list(slots)
        self.slot_minutes = slot_minutes
        self.start = self.slots[0]
        self.end = self.slots[-1] + timedelta(minutes=slot_minutes)

    def _fetch(self, site: Site, kind: str, source: SignalSource) -> dict[datetime, float]:
        name = ALIASES.get(source.provider, source.provider)
        provider = self.registry.get(name)
        if provider is None:
            known = ", ".join(sorted(self.registry))
            raise ProviderError(f"unknown provider {source.provider!r}; use one of {known}")
        if kind not in provider.signals:
            raise ProviderError(
                f"provider {name} does not give {kind!r} (it gives {', '.join(sorted(provider.signals))})"
            )
        result = provider.fetch(site, kind, source.options, self.start, self.end)
        key = cache_key(site.name, source.options)
        # every source is cached, synthetic and constant ones included: booking a shard reads
        # the signal of the slot it ran in from the cache, whatever produced it
        self.cache.upsert(name, key, kind, FORECAST, result.forecast.values, self.now)
        if result.actual is not None:
            self.cache.upsert(name, key, kind, ACTUAL, result.actual.values, self.now)
        return resample(result.forecast, self.slots, self.slot_minutes)

    def _reuse(
        self, site: Site, kind: str, source: SignalSource
    ) -> tuple[dict[datetime, float], dict[datetime, datetime]] | None:
        """Values (and issue times) cached within ``reuse_within``, if they cover every slot."""
        name = ALIASES.get(source.provider, source.provider)
        if self.reuse_within is None:
            return None
        key = cache_key(site.name, source.options)
        stamp = self.cache.last_fetched(name, key, kind)
        if stamp is None or self.now - stamp > self.reuse_within:
            return None
        stamped = self.cache.load_stamped(
            name, key, kind, FORECAST, self.start - timedelta(days=1), self.end
        )
        stamped.update(self.cache.load_stamped(name, key, kind, ACTUAL, self.start, self.end))
        if not stamped:
            return None
        step = infer_step(stamped)
        values = resample(
            Series({t: v for t, (v, _) in stamped.items()}, step), self.slots, self.slot_minutes
        )
        if len(values) != len(self.slots):
            return None
        issued = {t: f for t, (_, f) in stamped.items()}
        return values, slot_issue_times(issued, step, self.slots, self.slot_minutes)

    def _from_cache(self, site: Site, kind: str, source: SignalSource, filled: _Filled) -> None:
        name = ALIASES.get(source.provider, source.provider)
        key = cache_key(site.name, source.options)
        lo = self.start - timedelta(days=PERSISTENCE_DAYS + 1)
        stamped = self.cache.load_stamped(name, key, kind, FORECAST, lo, self.end)
        stamped.update(self.cache.load_stamped(name, key, kind, ACTUAL, lo, self.end))
        if not stamped:
            return
        series = Series({t: v for t, (v, _) in stamped.items()}, infer_step(stamped))
        stamps = {t: f for t, (_, f) in stamped.items()}
        for t in self.slots:
            if t in filled.values:
                continue
            for days in range(PERSISTENCE_DAYS + 1):
                shifted = t - timedelta(days=days)
                got = resample(series, [shifted], self.slot_minutes)
                if shifted in got:
                    filled.values[t] = got[shifted]
                    filled.labels[t] = f"cache:{name}" if days == 0 else f"persistence:{name}"
                    filled.fallback.add(t)
                    if days == 0:  # an earlier issue of this very slot (persistence has none)
                        at = slot_issue_times(stamps, series.step, [t], self.slot_minutes)
                        filled.issued.update(at)
                    break

    def cache_mix(self, site: Site, source: SignalSource) -> list[str]:
        """Fetch and cache the site's generation mix (reporting only: never blocks a plan).

        Returns:
            Notes for the shares that could not be had (their rows report an unknown mix).
        """
        notes: list[str] = []
        name = ALIASES.get(source.provider, source.provider)
        key = cache_key(site.name, source.options)
        for kind in MIX_KINDS:
            stamp = self.cache.last_fetched(name, key, kind)
            within = self.reuse_within
            if stamp is not None and within is not None and self.now - stamp <= within:
                continue
            try:
                self._fetch(site, kind, source)
            except (ProviderError, ValueError, TypeError, KeyError) as e:
                log.warning("site %s mix: provider %s failed: %s", site.name, name, e)
                notes.append(
                    f"site {site.name} mix: {e}; its rows are reported with an unknown mix"
                )
                break
        return notes

    def collect(self, site: Site, kind: str, source: SignalSource) -> _Filled:
        filled = _Filled()
        name = ALIASES.get(source.provider, source.provider)
        error: str | None = None
        try:
            reused = self._reuse(site, kind, source)
            if reused is not None:
                filled.values, filled.issued = reused
            else:
                filled.values = self._fetch(site, kind, source)
                filled.issued = dict.fromkeys(filled.values, self.now)
            filled.labels = dict.fromkeys(filled.values, name)
            filled.first_hand = name
        except ProviderError as e:
            error = str(e)
            log.warning("site %s %s: provider %s failed: %s", site.name, kind, name, e)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            # a payload shape no parser foresaw: treat like any provider failure, keep the trace
            error = f"{name}: unexpected answer ({type(e).__name__}: {e})"
            log.exception(
                "site %s %s: provider %s returned something unexpected", site.name, kind, name
            )
        filled.error = error
        missing = len(self.slots) - len(filled.values)
        if missing:
            self._from_cache(site, kind, source, filled)
        fb = fallback_source(source)
        if fb is not None and len(filled.values) < len(self.slots):
            try:
                extra = self._fetch(site, kind, fb)
            except ProviderError as e:
                filled.notes.append(f"site {site.name} {kind}: fallback {fb.provider} failed: {e}")
            else:
                for t, v in extra.items():
                    if t not in filled.values:
                        filled.values[t] = v
                        filled.labels[t] = f"fallback:{ALIASES.get(fb.provider, fb.provider)}"
                        filled.fallback.add(t)
                        filled.issued[t] = self.now
        gaps = [t for t in self.slots if t not in filled.values]
        if gaps:
            why = error or f"{name} covers only part of the horizon"
            raise ForecastUnavailable(
                f"site {site.name}: no {kind} signal for {len(gaps)} slot(s) from "
                f"{gaps[0]:%Y-%m-%dT%H:%MZ}: {why}; nothing cached within {PERSISTENCE_DAYS} "
                "days to persist. Fix the provider (network, credentials, options under "
                f"signals.{kind} in fleet.yaml), shorten the horizon, or add "
                "'fallback: synthetic' to that source."
            )
        if filled.fallback:
            reason = error or f"{name} does not cover the whole horizon"
            kinds = sorted({filled.labels[t].split(":", 1)[0] for t in filled.fallback})
            filled.notes.append(
                f"site {site.name} {kind}: {len(filled.fallback)} of {len(self.slots)} slot(s) "
                f"from {'/'.join(kinds)} ({reason})"
            )
        return filled


def collect_signals(
    fleet: Fleet,
    slots: Sequence[datetime],
    *,
    registry: Mapping[str, Provider] | None = None,
    cache: ForecastCache | None = None,
    settings: Settings | None = None,
    now: datetime,
    defaults: Mapping[str, SignalSource] | None = None,
    reuse_within: timedelta | None = None,
) -> SignalSet:
    """Signals for every site of ``fleet`` and every slot, from the sources in ``fleet.yaml``.

    For each site and signal (``carbon``, ``price``, ``solar``, ``wue``) the configured source
    (or ``defaults[kind]``) is fetched over the horizon, stored in ``cache`` (forecasts, and
    actuals when the provider reports them) and averaged or held onto the slots. Slots the
    provider cannot fill (it failed, or its forecast is shorter than the horizon) are filled,
    in this order and marked ``fallback=True``: the value cached for that slot by an earlier
    fetch; persistence (the same time of day on the latest earlier day in the cache, up to
    14 days back); the source's ``fallback`` provider (e.g. ``fallback: synthetic``). Without
    a source, ``solar`` is 0 kW and ``wue`` the site default; ``carbon`` and ``price`` are
    required. Every HTTP call has a timeout, so this never blocks forever.

    Args:
        fleet: sites and their ``signals:``.
        slots: slot starts (aware UTC, ascending, ``fleet.slot_minutes`` apart).
        registry: providers by name (default: ``build_registry(settings)``).
        cache: where fetched points are kept (default: a fresh in-memory cache).
        settings: used to build the registry when none is given.
        now: the time stamped on fetched points (``fetched_at``).
        defaults: sources for signals a site does not configure, e.g. a ``csv`` source on a
            ``forecasts.csv`` covering every site.
        reuse_within: when set, a source whose forecasts were fetched less than this long
            before ``now`` and that covers every slot is served from the cache without a
            request (re-plans every few minutes need not call rate-limited APIs each time).

    Returns:
        A ``SignalSet``; ``SlotSignal.source`` reads e.g.
        ``carbon=uk-carbon-intensity;price=csv;solar=persistence:open-meteo``, and
        ``SlotSignal.issued_at`` the ``fetched_at`` of the cached forecast its values came from
        (``now`` when fetched; the oldest part's; None for persistence: docs/forecasts.md).

    Raises:
        ValueError: neither ``registry`` nor ``settings`` was given.
        ForecastUnavailable: a site has no carbon or price source, or a signal cannot be had
            for some slot even from a fallback (the message names the site, the signal and
            how to fix it).
    """
    if not slots:
        raise ForecastUnavailable("no slots to collect signals for; give a horizon of >= 1 slot")
    if registry is None:
        if settings is None:
            raise ValueError("collect_signals needs registry= or settings= (to build one)")
        registry = build_registry(settings)
    collector = _Collector(
        registry, cache or MemoryForecastCache(), now, slots, fleet.slot_minutes, reuse_within
    )
    out: dict[tuple[str, datetime], SlotSignal] = {}
    notes: list[str] = []
    sources: dict[tuple[str, str], str] = {}
    any_fallback = False
    for site in fleet.sites:
        per_kind: dict[str, _Filled] = {}
        for kind in (CARBON, PRICE, SOLAR, WUE):
            source = site_source(site, kind) or (defaults or {}).get(kind)
            if source is None:
                if kind in (CARBON, PRICE):
                    raise ForecastUnavailable(
                        f"site {site.name} has no {kind} source; add e.g. "
                        f"signals: {{{kind}: {{provider: csv, path: forecasts.csv}}}} to it in "
                        "fleet.yaml (providers: uk-carbon-intensity, electricitymaps, watttime, "
                        "csv, constant, synthetic)"
                    )
                continue
            filled = collector.collect(site, kind, source)
            per_kind[kind] = filled
            sources[(site.name, kind)] = filled.first_hand
            notes.extend(filled.notes)
            any_fallback = any_fallback or bool(filled.fallback)
        mix_source = site_source(site, MIX) or (defaults or {}).get(MIX)
        if mix_source is not None:
            notes.extend(collector.cache_mix(site, mix_source))
        carbon_source = site_source(site, CARBON) or (defaults or {}).get(CARBON)
        for t in slots:
            out[(site.name, t)] = _slot_signal(site.name, t, per_kind, carbon_source)
    return SignalSet(signals=out, fallback=any_fallback, notes=tuple(notes), sources=sources)


def _slot_signal(
    site: str, t: datetime, per_kind: Mapping[str, _Filled], carbon_source: SignalSource | None
) -> SlotSignal:
    def value(kind: str) -> float | None:
        filled = per_kind.get(kind)
        return None if filled is None else filled.values[t]

    label = ";".join(f"{k}={f.labels[t]}" for k, f in per_kind.items())
    # as old as its oldest part; None when a part came from no issue of this slot (persistence)
    issues = [f.issued.get(t) for f in per_kind.values()]
    carbon = per_kind.get(CARBON)
    fb = None if carbon_source is None else fallback_source(carbon_source)
    origin = carbon_provenance(
        None if carbon is None else carbon.labels[t],
        None if carbon is None else carbon.error,
        None
        if carbon_source is None
        else (ALIASES.get(carbon_source.provider, carbon_source.provider), carbon_source.options),
        {} if fb is None else fb.options,
    )
    return SlotSignal(
        time=t,
        site=site,
        carbon_g_per_kwh=max(0.0, value(CARBON) or 0.0),
        price_per_kwh=value(PRICE) or 0.0,
        renewable_kw=max(0.0, value(SOLAR) or 0.0),
        wue_l_per_kwh=value(WUE),
        source=label,
        fallback=any(t in f.fallback for f in per_kind.values()),
        carbon_factor=origin.carbon_factor,
        issued_at=None if None in issues else min(i for i in issues if i is not None),
        carbon_provider=origin.provider,
        synthetic=origin.synthetic,
        fallback_reason=origin.fallback_reason,
    )
