"""A worker process's long-lived state: settings, fleet, database, engine cache, meters."""

from __future__ import annotations

import logging
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.dispatch.signals import SignalLookup
from scheduler.domain import Fleet, ModelSpec, Pool, Site
from scheduler.fleet import load_fleet
from scheduler.store.db import engine_from_settings, session_factory
from scheduler.store.tables import now_utc
from workers.energy.base import EnergyMeter
from workers.engine_cache import EngineCache
from workers.execute import Clock, MeterFactory, ShardOutcome, run_shard
from workers.storage import StorageGuard

log = logging.getLogger(__name__)


def default_meter_factory(site: Site, pool: Pool, model: ModelSpec) -> EnergyMeter:
    """The best meter of this machine (NVML, RAPL, else a labelled profile estimate)."""
    from workers.energy import meter_for_pool

    return meter_for_pool(pool, model)


def worker_name() -> str:
    """Lease owner id of this process: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def resolve_fleet(settings: Settings) -> Fleet:
    """The fleet named by ``GRIDSHIFT_FLEET``, or the bundled sample fleet."""
    if settings.fleet:
        return load_fleet(settings.fleet)
    from scheduler.samples import load_sample_fleet

    return load_sample_fleet()


def sample_weights_builder(data_dir: Path) -> Callable[[ModelSpec], str]:
    """Builds a sample-fleet model's tiny weights on first use into ``data_dir/models/NAME``.

    The sample fleet's models have no ``weights``: as in the demo, each is a tiny random-weight
    Llama built locally (about a second, no download). Workers of several pools may build at
    once: each builds into its own temporary directory and renames it into place; the loser
    uses the winner's copy.
    """

    def build(model: ModelSpec) -> str:
        from workers.engines.tiny_model import SAMPLE_CONTEXT, build_tiny_model

        context = model.context_tokens or SAMPLE_CONTEXT
        target = data_dir / "models" / model.name
        if (target / "config.json").exists():
            # reuses a complete model, finishes a partial, replaces one of another context
            return str(build_tiny_model(target, max_position_embeddings=context))
        tmp = target.with_name(f".{model.name}.{os.getpid()}.tmp")
        build_tiny_model(tmp, max_position_embeddings=context)
        try:
            os.replace(tmp, target)
        except OSError:  # another worker renamed its copy first
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("built the sample model %s at %s (tiny, random weights)", model.name, target)
        return str(target)

    return build


@dataclass
class WorkerRuntime:
    """Everything ``run_shard`` needs, built once per worker process."""

    settings: Settings
    fleet: Fleet
    sessions: sessionmaker[Session]
    engine_cache: EngineCache
    meter_factory: MeterFactory = default_meter_factory
    worker_id: str = field(default_factory=worker_name)
    signal_lookup: SignalLookup | None = None
    serves: tuple[str, str] | None = None
    storage: StorageGuard | None = None

    def __post_init__(self) -> None:
        """Every runtime watches its data dir (``workers.storage``)."""
        if self.storage is None:
            self.storage = StorageGuard(self.settings)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        weights_override: dict[str, str] | None = None,
        serves: tuple[str, str] | None = None,
    ) -> WorkerRuntime:
        """Build the runtime from settings (database, fleet, engine cache).

        ``weights_override`` maps model names to local weights, replacing fleet.yaml ``weights``
        (the demo points ``tiny-chat`` at the model it builds). ``serves`` is the worker's
        ``(site, pool)``: shards of any other pool are refused unclaimed.
        """
        builder = None if settings.fleet else sample_weights_builder(settings.data_dir)
        return cls(
            settings=settings,
            fleet=resolve_fleet(settings),
            sessions=session_factory(engine_from_settings(settings)),
            engine_cache=EngineCache(weights_override=weights_override, weights_builder=builder),
            serves=serves,
        )

    def run(self, shard_id: str, *, clock: Clock = now_utc) -> ShardOutcome:
        """Run one shard with this runtime (see ``workers.execute.run_shard``)."""
        return run_shard(
            shard_id,
            session_factory=self.sessions,
            settings=self.settings,
            fleet=self.fleet,
            engine_cache=self.engine_cache,
            meter_factory=self.meter_factory,
            worker_id=self.worker_id,
            clock=clock,
            signal_lookup=self.signal_lookup,
            serves=self.serves,
            storage=self.storage,
        )
