"""In-process ``transformers`` embedding engine: mean pooling of the last hidden state, normalised.

Loads the weights with ``AutoModel`` (a causal LM's weights load as its base model, so the
sample fleet's tiny Llama embeds too), runs inputs in batches with an attention mask, averages
the last hidden state over the real tokens and L2-normalises. Per-request problems (an input
longer than the context, ``dimensions`` above the vector size) become 400 results.
"""

from __future__ import annotations

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
from workers.engines.transformers import load_pretrained

log = logging.getLogger(__name__)


class TransformersEmbedEngine:
    """Embeds ``/v1/embeddings`` requests on the CPU (or a GPU) with ``transformers``."""

    kind = "transformers"

    def __init__(
        self,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_batch_size: int = 32,
        max_model_len: int | None = None,
        local_files_only: bool | None = None,
    ) -> None:
        """Configure the engine; nothing is loaded until ``load``.

        Args:
            device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
            dtype: ``auto``, ``float32``, ``float16`` or ``bfloat16``.
            max_batch_size: Most inputs in one forward pass.
            max_model_len: Context length override (default: the model config's).
            local_files_only: Never contact a hub (default: True when weights is a directory).
        """
        if max_batch_size < 1:
            raise EngineError("max_batch_size must be >= 1")
        self.device = device
        self.dtype = dtype
        self.max_batch_size = max_batch_size
        self.max_model_len = max_model_len
        self.local_files_only = local_files_only
        self.model_name: str | None = None
        self._weights: str | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._context_len = 0

    def load(self, model: str, weights: str | None) -> None:
        """Load ``model`` from ``weights`` with ``AutoModel``; no-op if already loaded.

        Raises:
            EngineError: torch/transformers are missing, or the weights cannot be loaded.
        """
        source = weights or model
        if self._model is not None and self._weights == source:
            self.model_name = model
            return
        self.close()
        tokenizer, loaded, device = load_pretrained(
            "AutoModel",
            model,
            source,
            device=self.device,
            dtype=self.dtype,
            local_files_only=self.local_files_only,
        )
        self._context_len = int(
            self.max_model_len or getattr(loaded.config, "max_position_embeddings", 0) or 512
        )
        self._model, self._tokenizer = loaded, tokenizer
        self._weights, self.model_name = source, model
        log.info("transformers embedding engine loaded %s from %s on %s", model, source, device)

    def close(self) -> None:
        """Drop the model and tokenizer."""
        if self._model is None:
            return
        self._model = self._tokenizer = None
        self._weights = self.model_name = None
        free_cuda_memory()

    def run(self, requests: Sequence[EngineRequest]) -> list[EngineResult]:
        """Embed every request's inputs; one result per request, in order.

        Raises:
            EngineError: no model is loaded.
        """
        if self._model is None or self.model_name is None:
            raise EngineError("no model loaded: call load(model, weights) before run()")
        results: list[EngineResult | None] = [None] * len(requests)
        todo: list[tuple[int, EmbeddingRequest, list[list[int]]]] = []
        for i, request in enumerate(requests):
            try:
                parsed = parse_embedding_request(request.url, request.body)
                todo.append((i, parsed, [self._ids(x, k) for k, x in enumerate(parsed.inputs)]))
            except InvalidInput as e:
                results[i] = error_result(request.custom_id, str(e))
        # Every input of every request in one sequence of batched forward passes
        vectors = iter(self._embed([ids for _, _, inputs in todo for ids in inputs]))
        for i, parsed, inputs in todo:
            mine = [next(vectors) for _ in inputs]
            try:
                results[i] = self._result(requests[i].custom_id, parsed, mine, inputs)
            except InvalidInput as e:
                results[i] = error_result(requests[i].custom_id, str(e))
        return [r for r in results if r is not None]

    def _ids(self, item: str | list[int], index: int) -> list[int]:
        if isinstance(item, str):
            ids = list(self._tokenizer(item)["input_ids"])
        else:
            vocab = len(self._tokenizer)
            if any(t >= vocab for t in item):
                raise InvalidInput(
                    f"input[{index}] holds token ids beyond the vocabulary ({vocab})"
                )
            ids = list(item)
        if not ids:
            raise InvalidInput(f"input[{index}] is empty after tokenisation")
        if len(ids) > self._context_len:
            raise InvalidInput(
                f"input[{index}] is {len(ids)} tokens but model {self.model_name!r} takes at "
                f"most {self._context_len}; shorten it"
            )
        return ids

    def _embed(self, ids: list[list[int]]) -> list[list[float]]:
        import torch

        out: list[list[float]] = []
        device = self._model.device
        for start in range(0, len(ids), self.max_batch_size):
            chunk = ids[start : start + self.max_batch_size]
            width = max(len(x) for x in chunk)
            rows = [x + [0] * (width - len(x)) for x in chunk]
            mask = [[1] * len(x) + [0] * (width - len(x)) for x in chunk]
            m = torch.tensor(mask, dtype=torch.long, device=device)
            with torch.inference_mode():
                hidden = self._model(
                    input_ids=torch.tensor(rows, dtype=torch.long, device=device),
                    attention_mask=m,
                ).last_hidden_state
            weights = m.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
            out.extend(pooled.float().cpu().tolist())
        return out

    def _result(
        self,
        custom_id: str,
        parsed: EmbeddingRequest,
        vectors: list[list[float]],
        ids: list[list[int]],
    ) -> EngineResult:
        return embedding_result(
            custom_id,
            parsed,
            model=self.model_name or "",
            raw_vectors=vectors,
            prompt_tokens=sum(len(x) for x in ids),
        )


def from_options(options: Mapping[str, Any]) -> TransformersEmbedEngine:
    """Build from fleet.yaml ``engine:`` options (generation-only options are ignored).

    Raises:
        EngineError: an option is unknown or has the wrong type.
    """
    known = {"device", "dtype", "max_batch_size", "max_model_len", "local_files_only"}
    generation_only = {"default_max_tokens", "max_n"}  # the pool's chat models use these
    unknown = sorted(set(options) - known - generation_only)
    if unknown:
        raise EngineError(
            f"unknown transformers engine option(s) {unknown}; known: {sorted(known)}"
        )
    try:
        return TransformersEmbedEngine(**{k: v for k, v in options.items() if k in known})
    except TypeError as e:
        raise EngineError(f"invalid transformers engine options: {e}") from e
