"""Pure pieces every embedding engine shares: reading an ``/v1/embeddings`` body, finishing
vectors (``dimensions``, normalisation, ``base64``) and OpenAI's ``CreateEmbeddingResponse``."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scheduler.errors import InvalidInput
from workers.engines.base import EngineResult

EMBEDDINGS_URL = "/v1/embeddings"


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """One request's inputs (each a text or token ids) and its output options."""

    inputs: list[str | list[int]]
    encoding_format: str = "float"
    dimensions: int | None = None


def parse_embedding_request(url: str, body: Mapping[str, Any]) -> EmbeddingRequest:
    """Read an embeddings body (intake has checked it; this re-checks what the engine needs).

    Raises:
        InvalidInput: not an embeddings request, or its input/options are malformed.
    """
    if url.split("?", 1)[0].rstrip("/") != EMBEDDINGS_URL:
        raise InvalidInput(f"url {url!r}: an embedding model serves only {EMBEDDINGS_URL!r}")
    raw = body.get("input")
    inputs: list[str | list[int]]
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
        inputs = [list(raw)]
    elif isinstance(raw, list) and raw and all(isinstance(x, str | list) for x in raw):
        inputs = list(raw)
    else:
        raise InvalidInput("input must be a string, a list of strings or of token id lists")
    if any(not x for x in inputs):
        raise InvalidInput("every input must be non-empty")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise InvalidInput(f"encoding_format must be 'float' or 'base64', got {fmt!r}")
    dims = body.get("dimensions")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
        raise InvalidInput(f"dimensions must be a positive integer, got {dims!r}")
    return EmbeddingRequest(inputs=inputs, encoding_format=fmt, dimensions=dims)


def finish_vector(vector: Sequence[float], dimensions: int | None) -> list[float]:
    """Cut to ``dimensions`` (Matryoshka-style) and L2-normalise, as OpenAI's vectors are.

    Raises:
        InvalidInput: ``dimensions`` is larger than the model's vectors.
    """
    values = [float(v) for v in vector]
    if dimensions is not None:
        if dimensions > len(values):
            raise InvalidInput(
                f"dimensions {dimensions} is larger than the model's {len(values)}; lower it"
            )
        values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values] if norm > 0 else values


def encode_vector(values: list[float], encoding_format: str) -> list[float] | str:
    """``float``: the list; ``base64``: little-endian float32 bytes, base64 (OpenAI's format)."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")
    return values


def embedding_body(
    *, model: str, vectors: Sequence[list[float] | str], prompt_tokens: int
) -> dict[str, Any]:
    """OpenAI's ``CreateEmbeddingResponse`` body."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def embedding_result(
    custom_id: str,
    request: EmbeddingRequest,
    *,
    model: str,
    raw_vectors: Sequence[Sequence[float]],
    prompt_tokens: int,
) -> EngineResult:
    """A 200 result from the model's raw (pooled) vectors, one per input."""
    vectors = [
        encode_vector(finish_vector(v, request.dimensions), request.encoding_format)
        for v in raw_vectors
    ]
    body = embedding_body(model=model, vectors=vectors, prompt_tokens=prompt_tokens)
    return EngineResult(
        custom_id=custom_id,
        status_code=200,
        body=body,
        input_tokens=prompt_tokens,
        output_tokens=0,
    )
