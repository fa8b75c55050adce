"""Inference engines (vllm, openai, transformers) behind one protocol, and ``build_engine``."""

from __future__ import annotations

from scheduler.errors import EngineError
from workers.engines.base import EngineConfig, EngineRequest, EngineResult, InferenceEngine

ENGINE_KINDS = ("vllm", "openai", "transformers")

__all__ = [
    "ENGINE_KINDS",
    "EngineConfig",
    "EngineRequest",
    "EngineResult",
    "InferenceEngine",
    "build_engine",
]


def build_engine(config: EngineConfig) -> InferenceEngine:
    """Build the engine a pool's ``engine:`` block in fleet.yaml asks for (nothing loaded yet).

    Heavy libraries (torch, vLLM) are imported only by the engine that needs them, and only
    when it loads a model.

    Args:
        config: ``kind`` (``vllm``, ``openai`` or ``transformers``) and its options.

    Returns:
        An engine; call ``load(model, weights)`` before ``run``.

    Raises:
        EngineError: the kind is unknown or its options are invalid.
    """
    options = dict(config.options)
    if config.kind == "transformers":
        from workers.engines import transformers

        return transformers.from_options(options)
    if config.kind == "openai":
        from workers.engines import openai_http

        return openai_http.from_options(options)
    if config.kind == "vllm":
        from workers.engines import vllm

        return vllm.from_options(options)
    raise EngineError(f"unknown engine kind {config.kind!r}; use one of {ENGINE_KINDS}")
