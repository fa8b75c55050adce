"""``EchoEngine``: a BENCHMARKING engine that answers instantly by echoing the prompt.

It exists to measure gridshift's own orchestration overhead (claim, read, write, ledger,
finalize) with the engine's time taken out; it does no inference and is not a fleet engine kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workers.engines.base import EngineRequest, EngineResult


class EchoEngine:
    """Returns each request's last message (or prompt) as the completion, in OpenAI shape."""

    kind = "echo"

    def __init__(self) -> None:
        """An engine with no model loaded."""
        self.model_name: str | None = None

    def load(self, model: str, weights: str | None) -> None:
        """Remember ``model`` (nothing to load)."""
        self.model_name = model

    def run(self, requests: Sequence[EngineRequest]) -> list[EngineResult]:
        """Echo every request; token counts are whitespace-separated words."""
        return [self._one(r) for r in requests]

    def close(self) -> None:
        """Nothing to release."""
        self.model_name = None

    def _one(self, req: EngineRequest) -> EngineResult:
        body = req.body
        messages = body.get("messages")
        text = str(messages[-1].get("content", "")) if messages else str(body.get("prompt", ""))
        n_in = len(text.split())
        chat = req.url.endswith("/chat/completions")
        choice: dict[str, Any] = (
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            if chat
            else {"index": 0, "text": text, "finish_reason": "stop"}
        )
        response = {
            "id": f"echo-{req.custom_id}",
            "object": "chat.completion" if chat else "text_completion",
            "created": 0,
            "model": self.model_name or "echo",
            "choices": [choice],
            "usage": {"prompt_tokens": n_in, "completion_tokens": n_in, "total_tokens": 2 * n_in},
        }
        return EngineResult(
            custom_id=req.custom_id,
            status_code=200,
            body=response,
            input_tokens=n_in,
            output_tokens=n_in,
        )
