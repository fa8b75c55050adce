"""One inference engine per worker process: built once, model swapped only between shards."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from scheduler.domain import EngineSpec, ModelSpec
from workers.engines.base import EngineConfig, InferenceEngine
from workers.engines.responses import ResponsesAdapter

log = logging.getLogger(__name__)

EngineFactory = Callable[[EngineConfig], InferenceEngine]


def default_engine_factory(config: EngineConfig) -> InferenceEngine:
    """Build an engine with ``workers.engines.build_engine`` (imported lazily: vLLM is heavy)."""
    from workers.engines import build_engine

    engine: InferenceEngine = build_engine(config)
    return engine


@dataclass(frozen=True, slots=True)
class ModelLoad:
    """One model load by the cache: which model and its wall time, waiting to be booked."""

    model: str
    seconds: float


class EngineCache:
    """Holds the worker process's engine and the model it has loaded.

    vLLM keeps GPU memory for its process's life, so a worker holds one engine; a shard for
    another model swaps the model (counted in ``swaps``), a shard for the same model reuses it.
    """

    def __init__(
        self,
        factory: EngineFactory | None = None,
        *,
        weights_override: Mapping[str, str] | None = None,
        weights_builder: Callable[[ModelSpec], str] | None = None,
    ) -> None:
        """Create an empty cache.

        Args:
            factory: builds an engine from a pool's engine spec (default ``build_engine``).
            weights_override: model name -> weights path, replacing fleet.yaml ``weights``
                (the demo and tests point ``tiny-chat`` at a model built at runtime).
            weights_builder: called on first use of a model that has no weights (neither
                overridden nor in fleet.yaml) to build them; returns their path (the sample
                fleet's tiny models build themselves this way).
        """
        self._factory = factory or default_engine_factory
        self._weights = dict(weights_override or {})
        self._builder = weights_builder
        self._engine: InferenceEngine | None = None
        self._engine_key: str | None = None
        self._model: str | None = None
        self._load: ModelLoad | None = None
        self.swaps = 0
        self.loads = 0

    @property
    def loaded_model(self) -> str | None:
        """Name of the model currently loaded, if any."""
        return self._model

    def get(self, spec: EngineSpec, model: ModelSpec) -> InferenceEngine:
        """Return the engine for ``spec`` with ``model`` loaded (loading or swapping if needed).

        Raises:
            EngineError: the engine cannot be built or the model cannot be loaded.
        """
        key = json.dumps([spec.kind, dict(spec.options), model.kind], sort_keys=True, default=str)
        if self._engine is None or key != self._engine_key:
            self.close()
            self._engine = self._factory(
                EngineConfig(kind=spec.kind, options=spec.options, task=model.kind)
            )
            self._engine_key = key
        if self._model != model.name:
            if self._model is not None:
                self.swaps += 1
                log.info("swapping model %s -> %s", self._model, model.name)
            weights = self._weights.get(model.name, model.weights)
            if weights is None and self._builder is not None:
                weights = self._weights[model.name] = self._builder(model)
            t0 = time.perf_counter()
            self._engine.load(model.name, weights)
            self._load = ModelLoad(model.name, time.perf_counter() - t0)
            configure = getattr(self._engine, "configure_tools", None)
            if configure is not None:  # the vLLM engine: the model's tool parser, if any
                parser = model.extra.get("tool_call_parser")
                configure(parser, auto=bool(model.extra.get("enable_auto_tool_choice")))
            self.loads += 1
            self._model = model.name
        # /v1/responses runs on the engine's chat path (workers.engines.responses).
        return ResponsesAdapter(self._engine)

    def take_load(self, model: str) -> ModelLoad | None:
        """The load of ``model`` not booked yet, handed out once (None when already booked or
        when the model loaded has since been swapped out: the first shard of a load books it)."""
        load, self._load = self._load, None
        return load if load is not None and load.model == model else None

    def close(self) -> None:
        """Release the engine and its model."""
        if self._engine is not None:
            self._engine.close()
        self._engine = None
        self._engine_key = None
        self._model = None
