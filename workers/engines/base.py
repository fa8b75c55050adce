"""The inference-engine protocol and the request/result types every engine shares."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class EngineRequest:
    """One request line of a batch: its ``custom_id``, endpoint ``url`` and ``body``."""

    custom_id: str
    url: str
    body: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class EngineResult:
    """The outcome of one request.

    ``status_code`` 200 with ``body`` in the endpoint's response shape (chat.completion or
    text_completion, with ``usage``), or an error ``status_code`` with ``error``
    (``{"code": ..., "message": ...}``).
    """

    custom_id: str
    status_code: int
    body: Mapping[str, Any] | None = None
    error: Mapping[str, Any] | None = None
    input_tokens: int = 0
    output_tokens: int = 0


@runtime_checkable
class InferenceEngine(Protocol):
    """Runs a list of batch requests against one model held by this worker process."""

    kind: str

    def load(self, model: str, weights: str | None) -> None:
        """Make ``model`` (from ``weights``: hub id or local path) the current model."""

    def run(self, requests: Sequence[EngineRequest]) -> list[EngineResult]:
        """Run ``requests`` and return one result per request, in order.

        Raises:
            TransientEngineError: the whole call may succeed if retried.
            EngineError: the engine cannot run these requests.
        """
        ...

    def close(self) -> None:
        """Release the model and any resources."""


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """What a worker needs to build its engine (from the pool's ``engine`` in fleet.yaml)."""

    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)
    task: str = "generate"  # the model's kind: "generate" or "embed"


def free_cuda_memory() -> None:
    """Return PyTorch's cached CUDA memory to the driver; a no-op without torch or a GPU."""
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
