"""Inference engines (vllm, openai, transformers) behind one protocol, and ``build_engine``."""

from __future__ import annotations

from typing import Any

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
        config: ``kind`` (``vllm``, ``openai`` or ``transformers``), its options and ``task``
            (the model's kind: an ``embed`` model gets the embedding engine of that kind; the
            ``openai`` engine forwards ``/v1/embeddings`` to its server).

    Returns:
        An engine; call ``load(model, weights)`` before ``run``.

    Raises:
        EngineError: the kind is unknown or its options are invalid.
    """
    options = dict(config.options)
    if config.task == "embed" and config.kind in ("transformers", "vllm"):
        if config.kind == "transformers":
            from workers.engines import transformers_embed

            return transformers_embed.from_options(options)
        from workers.engines import vllm_embed

        return vllm_embed.from_options(options)
    return _build_generation(config.kind, options)


def _build_generation(kind: str, options: dict[str, Any]) -> InferenceEngine:
    if kind == "transformers":
        from workers.engines import transformers

        return transformers.from_options(options)
    if kind == "openai":
        from workers.engines import openai_http

        return openai_http.from_options(options)
    if kind == "vllm":
        from workers.engines import vllm

        return vllm.from_options(options)
    raise EngineError(f"unknown engine kind {kind!r}; use one of {ENGINE_KINDS}")
